"""Plain mlx-lm on one weights folder: prompt and generation tokens/s, peak memory, and the factual answer."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import progress
from bench.defaults import FACT_ANSWER, fact_messages, story_messages


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"path", "label", "max_tokens", "runs", "fact_tokens"}``: loads, warms up, answers, then times ``runs``."""
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    label = spec["label"]
    started = time.perf_counter()
    model, tokenizer = load(spec["path"])
    load_seconds = time.perf_counter() - started
    greedy = make_sampler(0.0)

    def prompt(messages: list[dict[str, str]]) -> list[int]:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer.encode(text, add_special_tokens=False)

    def generate(messages: list[dict[str, str]], max_tokens: int) -> tuple[str, Any]:
        text, last = "", None
        for last in stream_generate(model, tokenizer, prompt(messages), max_tokens=max_tokens, sampler=greedy):
            text += last.text
        return text, last

    progress.say(f"{label}: loaded in {load_seconds:.1f}s, warming up")
    generate([{"role": "user", "content": "Hello"}], 2)
    mx.reset_peak_memory()
    answer, _ = generate(fact_messages(), spec["fact_tokens"])
    progress.say(f"{label}: answer {answer.strip()[:60]!r}")
    timings = []
    for index in range(spec["runs"]):
        _, last = generate(story_messages(), spec["max_tokens"])
        timings.append(last)
        progress.say(
            f"{label}: run {index + 1}/{spec['runs']}: prompt {last.prompt_tps:.1f} tok/s, "
            f"generation {last.generation_tps:.1f} tok/s"
        )
    return {
        "load_seconds": load_seconds,
        "prompt_tokens": timings[0].prompt_tokens,
        "prompt_tps": statistics.median(t.prompt_tps for t in timings),
        "generation_tokens": timings[0].generation_tokens,
        "generation_tps": statistics.median(t.generation_tps for t in timings),
        "peak_memory_mb": mx.get_peak_memory() / 1e6,
        "answer": answer,
        "correct": FACT_ANSWER in answer,
    }
