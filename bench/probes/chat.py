"""In-process mlx-lm on the worker's model and prompt: what a request costs with no queue, no HTTP, no Redis,
and no batch (mlx-lm's own ``stream_generate``, the reference a single stream through the platform is held to)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import progress
from bench.defaults import story_messages


def timed_chat(handler: Any, max_tokens: int, stream: bool) -> dict[str, Any]:
    """One greedy chat request with mlx-lm; times of the first and last text piece (``stream`` changes nothing
    here: mlx-lm yields every token either way, so both modes time the same generation)."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    deltas: list[float] = []
    prompt = handler.prompt_for("chat", {"messages": story_messages()})
    text, tokens = "", 0
    started = time.perf_counter()
    for response in stream_generate(
        handler.model, handler.tokenizer, prompt, max_tokens=max_tokens, sampler=make_sampler(0.0)
    ):
        if response.text:
            deltas.append(time.perf_counter())
            text += response.text
        tokens = response.generation_tokens - (response.finish_reason == "stop")
    ended = time.perf_counter()
    return {
        "tokens": tokens,
        "total_s": ended - started,
        "ttft_s": deltas[0] - started if deltas else None,
        "first_to_last_s": deltas[-1] - deltas[0] if len(deltas) > 1 else None,
        "text": text,
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
