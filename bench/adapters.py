"""Section: LoRA adapters per request. 16 streaming clients spread over the base model and 3 adapters, against 16
on the base model alone, in one run (alternating, twice), all in one worker's continuous batch."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path

import requests

from bench import progress
from bench.client import RequestTiming, TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, DATA_DIR, story_messages
from bench.inprocess import run_probe
from bench.load import LevelSummary, run_clients, summarize
from bench.report import SectionResult, Table

NAME = "adapters"
TITLE = "LoRA adapters per request in one batch"
CLIENTS = 16
ROUNDS = 2
GOAL = 0.8
"""Throughput of the mixed batch against the base model's alone that the issue asks for."""


def adapter_folders() -> dict[str, Path]:
    """The demo adapters (trained once at set-up) and a random one of their shape."""
    from config.settings import Settings
    from models.demo_adapters import prepare_adapters, random_like

    folders = prepare_adapters(Settings(data_dir=DATA_DIR), progress=progress.say)
    folders["random"] = random_like(folders["upper"], folders["upper"].with_name("bench-random"), seed=11)
    return folders


def load_adapters(base_url: str, folders: dict[str, Path]) -> list[str]:
    """The adapters added to the chat model through the API; the model ids that name them."""
    for name, folder in folders.items():
        response = requests.post(
            f"{base_url}/v1/models/{CHAT_MODEL}/adapters",
            json={"adapter_id": name, "adapter_path": str(folder)},
            timeout=300,
        )
        if response.status_code == 409:
            continue
        response.raise_for_status()
    return [f"{CHAT_MODEL}:{name}" for name in folders]


def no_end(base_url: str) -> dict:
    """A ``logit_bias`` that bans the end of the answer: every request generates ``max_tokens``, with an adapter or
    without (the demo adapters learned short answers; rows that end early would leave the batch half empty)."""
    answer = requests.post(
        f"{base_url}/tokenize",
        json={"model": CHAT_MODEL, "prompt": "<|im_end|>", "add_special_tokens": False},
        timeout=60,
    )
    answer.raise_for_status()
    return {"logit_bias": {str(token): -100 for token in answer.json()["tokens"]}}


def phase(
    base_url: str, models: list[str], tokens: int, per_client: int, tag: str, extra: dict | None = None
) -> LevelSummary:
    """``CLIENTS`` concurrent clients, client ``c`` naming ``models[c % len(models)]``."""
    client, counter = make_client(base_url), TokenCounter()

    def request(number: int, index: int) -> RequestTiming:
        model = models[number % len(models)]
        messages = story_messages(f"{tag}-{number}-{index}")
        return stream_chat(client, model, messages, tokens, counter, extra=extra)

    with progress.ticking(f"{tag}: {CLIENTS} clients over {len(models)} model(s)"):
        summary = summarize(CLIENTS, run_clients(request, CLIENTS, per_client))
    progress.say(f"{tag}: {summary.aggregate_tps:.1f} tok/s in all, TTFT p95 {summary.ttft_p95_s or 0:.2f}s")
    return summary


IN_PROCESS_ROUNDS = 4
IN_PROCESS_TOKENS = 32


def in_process_table(folders: dict[str, Path], quick: bool) -> dict:
    """The batch alone in a process of its own (OpenBLAS preloaded): 16 rows base-only against 16 mixed."""
    rounds = 1 if quick else IN_PROCESS_ROUNDS
    spec = {
        "adapters": {name: str(folder) for name, folder in folders.items()},
        "rows": CLIENTS,
        "tokens": 8 if quick else IN_PROCESS_TOKENS,
        "rounds": rounds,
    }
    with progress.ticking(f"in-process: {rounds} rounds of {CLIENTS} rows, base-only then mixed"):
        measured = run_probe("adapters", spec)["rounds"]
    table = Table(
        f"in-process, one batch of {CLIENTS} greedy rows of {spec['tokens']} tokens (no HTTP, Celery or Redis);"
        " mixed: rows spread evenly over the base model and 3 adapters",
        ["round", "base-only tok/s", "mixed tok/s", "mixed / base-only"],
    )
    ratios = []
    for number, pair in enumerate(measured, 1):
        ratio = pair["mixed"]["tps"] / pair["base"]["tps"]
        ratios.append(ratio)
        table.rows.append([number, pair["base"]["tps"], pair["mixed"]["tps"], f"{ratio:.0%}"])
    return {"table": table, "rounds": measured, "median_ratio": statistics.median(ratios)}


def run(context: BenchContext) -> SectionResult:
    options = context.options
    result = SectionResult(NAME, TITLE)
    folders = adapter_folders()
    in_process = in_process_table(folders, options.quick)
    base_url = context.platform().base_url
    adapters = load_adapters(base_url, folders)
    mixed = [CHAT_MODEL, *adapters]
    tokens, per_client = options.concurrency_tokens, options.requests_per_client
    client, counter = make_client(base_url), TokenCounter()
    for model in mixed:  # every adapter once, so that no phase pays a first use
        stream_chat(client, model, story_messages("warm-up"), 4, counter)
    table = Table(
        f"{CLIENTS} streaming clients, {per_client} request(s) each, {tokens} tokens each (the end of the answer"
        " banned by logit_bias, in both phases), greedy, each prompt unique;"
        f" mixed: clients spread evenly over the base model and {len(adapters)} adapters",
        ["round", "clients on", "requests", "errors", "aggregate tok/s", "TTFT p50 s", "TTFT p95 s", "of base-only"],
    )
    ratios, raw = [], []
    extra = no_end(base_url)
    for round_number in range(1, (1 if options.quick else ROUNDS) + 1):
        base = phase(base_url, [CHAT_MODEL], tokens, per_client, f"base-{round_number}", extra)
        spread = phase(base_url, mixed, tokens, per_client, f"mixed-{round_number}", extra)
        ratio = spread.aggregate_tps / base.aggregate_tps if base.aggregate_tps else 0.0
        ratios.append(ratio)
        for label, summary, share in (("base model only", base, "–"), ("base + 3 adapters", spread, f"{ratio:.0%}")):
            table.rows.append(
                [
                    round_number,
                    label,
                    summary.requests,
                    summary.errors,
                    summary.aggregate_tps,
                    summary.ttft_p50_s,
                    summary.ttft_p95_s,
                    share,
                ]
            )
        raw.append({"base": asdict(base), "mixed": asdict(spread), "ratio": ratio})
    result.tables.append(table)
    result.tables.append(in_process.pop("table"))
    median = statistics.median(ratios)
    verdict = "met" if median >= GOAL else "not met"
    result.notes.append(
        f"mixed batch at {median:.0%} of base-only throughput (median of rounds; goal {GOAL:.0%}: {verdict})"
    )
    result.notes.append(
        "adapters: upper and ahoy (trained at set-up by models.demo_adapters), random (their shape, random matrices);"
        " rank 8 on every linear layer of the last 8 of 30 blocks"
    )
    result.notes.append(
        f"in-process, the batch alone (alternating rounds): mixed at {in_process['median_ratio']:.0%} of base-only"
    )
    result.raw = {"rounds": raw, "median_ratio": median, "in_process": in_process}
    return result
