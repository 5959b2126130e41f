"""Trains the demo LoRA adapters of the chat model, once: ``python -m models.demo_adapters``.

No adapter can be downloaded here, so set-up makes two with ``mlx_lm.lora`` on generated data: the chat model's
own greedy answers to templated questions, rewritten in one style. ``upper`` answers in upper case; ``ahoy``
opens every answer with "Ahoy!". Each is small (rank 8 on the last layers, a few dozen steps: a few minutes of
CPU) and lands under the models folder (``adapters/<name>``), which the adapter API accepts as ``adapter_path``.
A ``trained.json`` marker records the recipe: a second run with the same recipe and base weights does nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from config.settings import Settings
from models.catalog import load_catalog, served_path

MARKER = "trained.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
"""The colours of mlx-lm's report lines (rich keeps some without a terminal)."""
GREETING = "Ahoy!"
STYLES: dict[str, Callable[[str], str]] = {
    "upper": str.upper,
    "ahoy": lambda answer: f"{GREETING} {answer}",
}
"""Each demo adapter's name and how it rewrites an answer of the base model."""
RECIPE = {
    "questions": 96,
    "answer_tokens": 24,
    "rank": 8,
    "scale": 20.0,
    "num_layers": 8,
    "iters": 60,
    "batch_size": 4,
    "learning_rate": 5e-4,
    "seed": 7,
}
SUBJECTS = [
    "the sea", "a cat", "the moon", "bread", "a river", "winter", "music", "a library", "the sun", "a garden",
    "coffee", "mountains", "a bicycle", "rain", "chess", "a forest", "the wind", "a city", "honey", "a clock",
]  # fmt: skip
TEMPLATES = [
    "Tell me one fact about {subject}.",
    "Describe {subject} in one sentence.",
    "Why do people like {subject}?",
    "Write a short line about {subject}.",
    "What colour is {subject}?",
]


def adapters_dir(settings: Settings) -> Path:
    return settings.models_dir / "adapters"


def questions(count: int, seed: int) -> list[str]:
    pairs = [t.format(subject=s) for t, s in itertools.product(TEMPLATES, SUBJECTS)]
    random.Random(seed).shuffle(pairs)
    return pairs[:count]


def base_answers(model_dir: Path, prompts: list[str], max_tokens: int, progress: Callable[[str], None]) -> list[str]:
    """The chat model's greedy answers to ``prompts``, generated in one batch."""
    from mlx_lm import batch_generate, load

    model, tokenizer = load(str(model_dir))
    encoded = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True) for p in prompts
    ]
    progress(f"answering {len(prompts)} questions with the base model (up to {max_tokens} tokens each)")
    return [text.strip() for text in batch_generate(model, tokenizer, encoded, max_tokens=max_tokens).texts]


def write_data(folder: Path, prompts: list[str], answers: list[str], style: Callable[[str], str]) -> None:
    """``train.jsonl`` and ``valid.jsonl`` in mlx-lm's chat format (valid: the last quarter)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": style(a)}]})
        for p, a in zip(prompts, answers, strict=True)
    ]
    split = len(rows) * 3 // 4
    (folder / "train.jsonl").write_text("\n".join(rows[:split]) + "\n")
    (folder / "valid.jsonl").write_text("\n".join(rows[split:]) + "\n")


def train(model_dir: Path, data: Path, target: Path, recipe: dict, progress: Callable[[str], None]) -> None:
    """Runs ``mlx_lm.lora`` (its own process: it owns the MLX state) into ``target``."""
    config = data / "lora.yaml"
    lora = {"rank": recipe["rank"], "scale": recipe["scale"], "dropout": 0.0}
    config.write_text(json.dumps({"lora_parameters": lora}))  # JSON is YAML
    command = [
        sys.executable, "-m", "mlx_lm", "lora", "--train", "--model", str(model_dir), "--data", str(data),
        "--adapter-path", str(target), "--config", str(config), "--mask-prompt",
        "--num-layers", str(recipe["num_layers"]), "--iters", str(recipe["iters"]),
        "--batch-size", str(recipe["batch_size"]), "--learning-rate", str(recipe["learning_rate"]),
        "--steps-per-report", "10", "--steps-per-eval", str(recipe["iters"]), "--val-batches", "1",
        "--save-every", str(recipe["iters"]), "--seed", str(recipe["seed"]),
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its report lines as they come
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment) as run:
        for line in run.stdout:
            report = ANSI.sub("", line).strip()
            if report[:1].isdigit() or report.startswith(("iter", "Trainable")):  # mlx-lm's report lines
                progress(report)
    if run.returncode != 0:
        raise RuntimeError(f"mlx_lm lora failed ({run.returncode}) for {target.name}")


def prepare_adapters(settings: Settings, progress: Callable[[str], None] = print) -> dict[str, Path]:
    """The demo adapters' folders, trained first where missing or made by another recipe."""
    spec = load_catalog(settings)[settings.default_chat_model]
    model_dir = served_path(settings, spec)
    base = json.loads((model_dir / "prepared.json").read_text())
    expected = {"recipe": RECIPE, "styles": sorted(STYLES), "base": base}
    root = adapters_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    folders = {name: root / f"smollm2-{name}" for name in STYLES}
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(_marker(folder) == expected for folder in folders.values()):
            progress(f"[adapters] ready in {root}")
            return folders
        started = time.monotonic()
        say = lambda line: progress(f"[adapters] {line}")  # noqa: E731
        prompts = questions(RECIPE["questions"], RECIPE["seed"])
        answers = base_answers(model_dir, prompts, RECIPE["answer_tokens"], say)
        for name, folder in folders.items():
            staging = folder.with_name(folder.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            data = staging / "data"
            write_data(data, prompts, answers, STYLES[name])
            say(f"training {name} ({RECIPE['iters']} steps, rank {RECIPE['rank']}, last {RECIPE['num_layers']} layers)")
            train(model_dir, data, staging, RECIPE, say)
            (staging / MARKER).write_text(json.dumps(expected))
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
        say(f"trained {', '.join(folders)} in {time.monotonic() - started:.0f}s into {root}")
        return folders


def random_like(template: Path, target: Path, seed: int) -> Path:
    """An adapter of the same layers and rank as ``template``, with random matrices (for benchmarks: what it
    computes costs what a trained one does; what it says is the base model's, a little perturbed)."""
    import mlx.core as mx

    key = mx.random.key(seed)
    weights = {}
    for name, matrix in sorted(mx.load(str(template / "adapters.safetensors")).items()):
        key, draw = mx.random.split(key)
        weights[name] = mx.random.normal(matrix.shape, key=draw) * float(mx.std(matrix).item())
    target.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(target / "adapters.safetensors"), weights)
    shutil.copy(template / "adapter_config.json", target / "adapter_config.json")
    return target


def _marker(folder: Path) -> dict | None:
    marker = folder / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="Train the chat model's demo LoRA adapters (once).").parse_args(argv)
    prepare_adapters(Settings.from_env())
    return 0


if __name__ == "__main__":
    sys.exit(main())
