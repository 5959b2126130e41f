"""The worker's own chat handler called directly: what a request costs with no queue, no HTTP, no Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import progress
from bench.defaults import story_messages


def timed_chat(handler: Any, max_tokens: int, stream: bool) -> dict[str, Any]:
    """One greedy chat request; times of the first and last text delta when streaming."""
    deltas: list[float] = []

    def emit(event: dict[str, Any]) -> None:
        if event.get("content"):
            deltas.append(time.perf_counter())

    payload = {"messages": story_messages(), "max_tokens": max_tokens, "temperature": 0.0, "stream": stream}
    started = time.perf_counter()
    result = handler.run("chat", payload, emit, lambda: False)
    ended = time.perf_counter()
    return {
        "tokens": result["usage"]["completion_tokens"],
        "total_s": ended - started,
        "ttft_s": deltas[0] - started if deltas else None,
        "first_to_last_s": deltas[-1] - deltas[0] if len(deltas) > 1 else None,
        "text": result["content"],
    }


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"path", "max_tokens", "runs", "warmup_runs", "modes"}``: per mode, the timed runs after warm-up."""
    from models.handlers.lm import load

    handler = load(Path(spec["path"]))
    handler.warmup()
    results: dict[str, list[dict[str, Any]]] = {}
    for mode in spec["modes"]:
        stream = mode == "stream"
        for _ in range(spec["warmup_runs"]):
            timed_chat(handler, spec["max_tokens"], stream)
        results[mode] = []
        for index in range(spec["runs"]):
            run_result = timed_chat(handler, spec["max_tokens"], stream)
            results[mode].append(run_result)
            progress.say(
                f"in-process {mode} run {index + 1}/{spec['runs']}: {run_result['tokens']} tokens "
                f"in {run_result['total_s']:.2f}s"
            )
    return {"runs": results}
