"""Section 2: the queue hop. The same greedy request with mlx-lm in-process and through the API (batch of one)."""

from __future__ import annotations

import uuid
from typing import Any

from bench import progress
from bench.client import RequestTiming, TokenCounter, complete_chat, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, CHAT_MODEL_DIR, story_messages
from bench.inprocess import run_probe
from bench.report import SectionResult, Table
from bench.stats import median, ratio
from bench.worker_log import engine_seconds

NAME = "overhead"
TITLE = "Overhead of the queue hop (one client, greedy, same prompt and token count)"
MODES = ("complete", "stream")
THROUGHPUT_GOAL = 0.95
ADDED_TTFT_GOAL_MS = 15.0


def figures(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Medians of one mode's runs: tokens, time to first token, generated tok/s, end-to-end seconds.

    Streamed tok/s counts from the first to the last text chunk (time to first token is its own column);
    non-streamed tok/s is tokens over the whole request.
    """
    streamed = any(run["ttft_s"] is not None for run in runs)

    def tps(run: dict[str, Any]) -> float | None:
        if streamed:
            return (run["tokens"] - 1) / run["first_to_last_s"] if run["first_to_last_s"] else None
        return run["tokens"] / run["total_s"]

    return {
        "tokens": median([run["tokens"] for run in runs]),
        "ttft_ms": median([run["ttft_s"] * 1000 for run in runs if run["ttft_s"] is not None]),
        "tps": median([value for value in map(tps, runs) if value is not None]),
        "total_s": median([run["total_s"] for run in runs]),
    }


def as_run(timing: RequestTiming, request_id: str) -> dict[str, Any]:
    """A client's timing in the shape the in-process probe reports, with its request ID."""
    if not timing.ok:
        raise RuntimeError(f"request through the API failed: {timing.error}")
    return {
        "request_id": request_id,
        "tokens": timing.tokens,
        "total_s": timing.total_s,
        "ttft_s": timing.ttft_s,
        "first_to_last_s": timing.first_to_last_s,
        "text": timing.text,
    }


def api_runs(base_url: str, mode: str, max_tokens: int, warmup: int, runs: int) -> list[dict[str, Any]]:
    """The timed requests of ``mode`` through the API after ``warmup`` untimed ones."""
    client, counter = make_client(base_url), TokenCounter()

    def once() -> dict[str, Any]:
        request_id = f"bench-overhead-{uuid.uuid4().hex[:12]}"
        if mode == "stream":
            timing = stream_chat(client, CHAT_MODEL, story_messages(), max_tokens, counter, request_id=request_id)
        else:
            timing = complete_chat(client, CHAT_MODEL, story_messages(), max_tokens, request_id=request_id)
        return as_run(timing, request_id)

    for _ in range(warmup):
        once()
    timed = []
    for index in range(runs):
        timed.append(once())
        progress.say(f"API {mode} run {index + 1}/{runs}: {timed[-1]['tokens']} tokens in {timed[-1]['total_s']:.2f}s")
    return timed


def run(context: BenchContext) -> SectionResult:
    """In-process first (the platform idle), then the same requests through the API."""
    options = context.options
    platform = context.platform()
    progress.say("in-process: mlx-lm on the worker's model with OpenBLAS, as in the worker")
    spec = {
        "path": str(CHAT_MODEL_DIR),
        "max_tokens": options.overhead_tokens,
        "runs": options.overhead_runs,
        "warmup_runs": options.overhead_warmup_runs,
        "modes": list(MODES),
    }
    inprocess = run_probe("chat", spec, openblas=True)["runs"]
    api = {
        mode: api_runs(
            platform.base_url, mode, options.overhead_tokens, options.overhead_warmup_runs, options.overhead_runs
        )
        for mode in MODES
    }
    result = SectionResult(NAME, TITLE)
    table = Table(
        f"{CHAT_MODEL}, max_tokens {options.overhead_tokens}, median of {options.overhead_runs} runs "
        f"after {options.overhead_warmup_runs} warm-up",
        [
            "mode",
            "tokens",
            "TTFT in-process ms",
            "TTFT API ms",
            "added TTFT ms",
            "tok/s in-process",
            "tok/s API",
            "API / in-process",
            "end-to-end in-process s",
            "end-to-end API s",
        ],
    )
    summary = {}
    for mode in MODES:
        local, remote = figures(inprocess[mode]), figures(api[mode])
        throughput = ratio(remote["tps"], local["tps"])
        added = remote["ttft_ms"] - local["ttft_ms"] if mode == "stream" else None
        summary[mode] = {"in_process": local, "api": remote, "throughput_ratio": throughput, "added_ttft_ms": added}
        table.rows.append(
            [
                "streaming" if mode == "stream" else "non-streaming",
                f"{local['tokens']:.0f} / {remote['tokens']:.0f}",
                local["ttft_ms"],
                remote["ttft_ms"],
                added,
                local["tps"],
                remote["tps"],
                f"{throughput:.1%}" if throughput is not None else None,
                local["total_s"],
                remote["total_s"],
            ]
        )
    result.tables.append(table)
    stream = summary["stream"]
    met_throughput = all((s["throughput_ratio"] or 0) >= THROUGHPUT_GOAL for s in summary.values())
    met_ttft = stream["added_ttft_ms"] is not None and stream["added_ttft_ms"] <= ADDED_TTFT_GOAL_MS
    result.notes.append(
        f"goal ≥ {THROUGHPUT_GOAL:.0%} of in-process throughput: {'met' if met_throughput else 'missed'}; "
        f"goal ≤ {ADDED_TTFT_GOAL_MS:.0f} ms added time to first token: {'met' if met_ttft else 'missed'}"
    )
    same_text = all(run["text"] == inprocess[mode][0]["text"] for mode in MODES for run in api[mode] + inprocess[mode])
    result.notes.append(
        "streamed tok/s run from the first to the last text chunk; non-streamed tok/s are tokens over the whole "
        "request; in-process is mlx-lm's stream_generate on the worker's model and prompt, OpenBLAS preloaded"
    )
    result.notes.append(f"in-process and API answers identical: {'yes' if same_text else 'no'}")
    result.tables.append(breakdown(api, inprocess, engine_seconds(platform.workdir / "supervisor.log")))
    result.raw = {"in_process": inprocess, "api": api, "summary": summary}
    return result


def breakdown(
    api: dict[str, list[dict[str, Any]]], inprocess: dict[str, list[dict[str, Any]]], engine: dict[str, float]
) -> Table:
    """Where an API request's time goes: the engine's own time (worker log, by request ID) and the rest."""
    table = Table(
        "Where the time of an API request goes (medians; engine time from the worker's log, by request ID)",
        ["mode", "end-to-end API s", "in the engine s", "outside the engine ms", "in-process handler s"],
    )
    for mode in MODES:
        runs = [run for run in api[mode] if run["request_id"] in engine]
        table.rows.append(
            [
                "streaming" if mode == "stream" else "non-streaming",
                median([run["total_s"] for run in runs]),
                median([engine[run["request_id"]] for run in runs]),
                median([(run["total_s"] - engine[run["request_id"]]) * 1000 for run in runs]),
                median([run["total_s"] for run in inprocess[mode]]),
            ]
        )
    return table
