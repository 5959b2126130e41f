"""The platform's batch engine in this process, with speculative decoding and without, on the same tasks: tok/s and
the share of draft tokens kept, one stream and several."""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench import progress
from bench.speculative_tasks import TASKS


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"path", "max_tokens", "streams", "draft_tokens"}``: for every task and number of streams, the same
    greedy requests through the engine without drafting, then with it."""
    from models.batch import BatchSession, Ticket
    from models.handlers import load_handler
    from models.handlers.base import ServingLimits
    from models.prompt_cache import PromptCache

    most = max(spec["streams"])
    limits = ServingLimits(max_sequences=most, prompt_cache_entries=0, draft_tokens=spec["draft_tokens"])
    handler = load_handler("lm", Path(spec["path"]), 4096, limits)
    drafting = handler.batch
    plain = BatchSession(
        handler.model,
        handler.tokenizer,
        handler.prompt_for,
        4096,
        max_sequences=most,
        kv_budget_bytes=4 * 10**9,
        prompt_cache=PromptCache(0, 0),
        draft_tokens=0,
    )
    counter = iter(range(10**6))

    def measure(batch: BatchSession, build: Any, streams: int) -> tuple[int, float, float]:
        tickets = [
            Ticket(
                "chat",
                {"messages": build(f"e{next(counter)}"), "max_tokens": spec["max_tokens"], "temperature": 0},
                lambda _event: None,
                lambda: False,
                lambda: False,
                Future(),
                "bench",
            )
            for _ in range(streams)
        ]
        started, cpu = time.perf_counter(), time.process_time()
        for ticket in tickets:
            batch.submit(ticket)
        while batch.busy:
            batch.step()
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        return sum(t.future.result()["usage"]["completion_tokens"] for t in tickets), seconds, cpu_seconds

    for batch in (plain, drafting):
        measure(batch, TASKS["free text (a story)"][1], 1)  # warm-up
    rows = []
    for task, (_extractive, build) in TASKS.items():
        for streams in spec["streams"]:
            plain_tokens, plain_seconds, plain_cpu = measure(plain, build, streams)
            stats = drafting._generator().draft_stats
            drafted, accepted, steps = stats.drafted, stats.accepted, stats.steps
            tokens, seconds, cpu = measure(drafting, build, streams)
            row = {
                "task": task,
                "streams": streams,
                "plain_tps": plain_tokens / plain_seconds,
                "drafting_tps": tokens / seconds,
                "plain_tokens_per_cpu_s": plain_tokens / plain_cpu,
                "drafting_tokens_per_cpu_s": tokens / cpu,
                "drafted": stats.drafted - drafted,
                "accepted": stats.accepted - accepted,
                "checked_steps": stats.steps - steps,
                "tokens": tokens,
            }
            rows.append(row)
            progress.say(
                f"engine, {task}, {streams} stream(s): {row['plain_tps']:.1f} tok/s without drafting, "
                f"{row['drafting_tps']:.1f} with ({row['accepted']}/{row['drafted']} draft tokens kept)"
            )
    return {"rows": rows}
