"""The platform's batch engine in this process, with speculative decoding and without, on the same tasks: tok/s and
the share of draft tokens kept, one stream and several."""

from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bench import progress
from bench.speculative_tasks import TASKS, request_tag


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"path", "max_tokens", "streams", "runs", "draft_tokens"}``: for every task and number of streams, the
    same greedy requests through the engine without drafting, then with it (one stream: ``runs`` requests in turn,
    as over HTTP)."""
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

    def measure(batch: BatchSession, task: str, streams: int, rounds: int) -> tuple[int, float, float]:
        """``rounds`` waves of ``streams`` requests at once, the tags the HTTP half sends for the same cell."""
        build = TASKS[task][1]
        tokens, seconds, cpu_seconds = 0, 0.0, 0.0
        for index in range(rounds):
            tickets = [
                Ticket(
                    "chat",
                    {
                        "messages": build(request_tag(task, streams, client, index)),
                        "max_tokens": spec["max_tokens"],
                        "temperature": 0,
                    },
                    lambda _event: None,
                    lambda: False,
                    lambda: False,
                    Future(),
                    "bench",
                )
                for client in range(streams)
            ]
            started, cpu = time.perf_counter(), time.process_time()
            for ticket in tickets:
                batch.submit(ticket)
            while batch.busy:
                batch.step()
            seconds += time.perf_counter() - started
            cpu_seconds += time.process_time() - cpu
            tokens += sum(t.future.result()["usage"]["completion_tokens"] for t in tickets)
        return tokens, seconds, cpu_seconds

    for batch in (plain, drafting):
        measure(batch, "free text (a story)", 1, 1)  # warm-up (no prompt cache: a prompt sent again costs as much)
    rows = []
    for task in TASKS:
        for streams in spec["streams"]:
            rounds = spec["runs"] if streams == 1 else 1
            plain_tokens, plain_seconds, plain_cpu = measure(plain, task, streams, rounds)
            stats = drafting._generator().draft_stats
            drafted, accepted, steps = stats.drafted, stats.accepted, stats.steps
            tokens, seconds, cpu = measure(drafting, task, streams, rounds)
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
