"""Concurrent clients, released together, each sending its requests one after another; the figures of a level."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from bench.client import RequestTiming
from bench.stats import percentile


@dataclass
class LevelSummary:
    """What ``clients`` concurrent clients got in all."""

    clients: int
    requests: int
    errors: int
    tokens: int
    wall_s: float
    aggregate_tps: float
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    first_error: str | None
    token_count: str
    """How generated tokens were counted: the server's usage, or the text re-tokenized here."""


def run_clients(
    request: Callable[[int, int], RequestTiming], clients: int, requests_per_client: int
) -> list[RequestTiming]:
    """Calls ``request(client, index)`` from ``clients`` threads, ``requests_per_client`` times each."""
    barrier = threading.Barrier(clients)
    timings: list[RequestTiming] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        barrier.wait()
        for index in range(requests_per_client):
            timing = request(number, index)
            with lock:
                timings.append(timing)

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return timings


def summarize(clients: int, timings: list[RequestTiming]) -> LevelSummary:
    """Aggregate tokens/s over the level's wall time, latency percentiles of the successful requests, errors."""
    ok = [t for t in timings if t.ok]
    wall = max(t.started + t.total_s for t in timings) - min(t.started for t in timings)
    tokens = sum(t.tokens for t in ok)
    errors = [t for t in timings if not t.ok]
    return LevelSummary(
        clients=clients,
        requests=len(timings),
        errors=len(errors),
        tokens=tokens,
        wall_s=wall,
        aggregate_tps=tokens / wall if wall > 0 else 0.0,
        ttft_p50_s=percentile([t.ttft_s for t in ok if t.ttft_s is not None], 50),
        ttft_p95_s=percentile([t.ttft_s for t in ok if t.ttft_s is not None], 95),
        e2e_p50_s=percentile([t.total_s for t in ok], 50),
        e2e_p95_s=percentile([t.total_s for t in ok], 95),
        first_error=errors[0].error if errors else None,
        token_count=", ".join(sorted({t.token_source for t in ok})),
    )
