"""Health and metrics under load: 256 streaming clients at once against the platform, while a probe asks
``/health`` and ``/metrics`` every 200 ms; beside it, ``mlx_lm.server``'s ``/health`` under the same clients."""

from __future__ import annotations

import threading
import time

import requests

from bench import progress
from bench.client import TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import story_messages
from bench.load import run_clients
from bench.report import SectionResult, Table
from bench.stats import percentile
from bench.targets import mlx_lm_server, platform_one_worker

NAME = "health_under_load"
TITLE = "Health and metrics under 256 open streams"
STREAMS = 256
TOKENS = 16
PROBE_EVERY_S = 0.2


def _probe(url: str, stop: threading.Event, seconds: list[float], failures: list[str]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        try:
            answer = requests.get(url, timeout=30)
            if answer.status_code >= 500 and answer.status_code != 503:
                failures.append(str(answer.status_code))
        except requests.RequestException as exc:
            failures.append(type(exc).__name__)
        seconds.append(time.perf_counter() - started)
        stop.wait(PROBE_EVERY_S)


def measure(base_url: str, model: str, probes: list[str], streams: int) -> dict[str, object]:
    """Opens ``streams`` streaming requests at once and probes ``probes`` (paths) until they have all ended."""
    client, counter = make_client(base_url), TokenCounter()
    stop = threading.Event()
    seconds: dict[str, list[float]] = {path: [] for path in probes}
    failures: dict[str, list[str]] = {path: [] for path in probes}
    threads = [
        threading.Thread(target=_probe, args=(base_url + path, stop, seconds[path], failures[path]), daemon=True)
        for path in probes
    ]
    for thread in threads:
        thread.start()
    timings = run_clients(
        lambda c, i: stream_chat(client, model, story_messages(f"load-{c}"), TOKENS, counter), streams, 1
    )
    stop.set()
    for thread in threads:
        thread.join()
    return {
        "streams_ok": sum(1 for t in timings if t.ok),
        "probes": {
            path: {
                "count": len(seconds[path]),
                "p50_ms": (percentile(seconds[path], 50) or 0.0) * 1000,
                "p95_ms": (percentile(seconds[path], 95) or 0.0) * 1000,
                "max_ms": max(seconds[path], default=0.0) * 1000,
                "failures": len(failures[path]),
            }
            for path in probes
        },
    }


def run(context: BenchContext) -> SectionResult:
    streams = 32 if context.options.quick else STREAMS
    result = SectionResult(NAME, TITLE)
    table = Table(
        f"{streams} streaming clients at once ({TOKENS} tokens each), a probe every {PROBE_EVERY_S * 1000:.0f} ms",
        ["server", "probe", "streams ok", "probes", "p50 ms", "p95 ms", "max ms", "failed probes"],
    )
    raw = {}
    for name, target, probes in (
        ("platform", platform_one_worker, ["/health", "/metrics"]),
        ("mlx_lm.server", mlx_lm_server, ["/health"]),
    ):
        with target(context) as server:
            progress.say(f"{name}: {streams} streams, probing {', '.join(probes)}")
            measured = measure(server.base_url, server.model, probes, streams)
        raw[name] = measured
        for path, figures in measured["probes"].items():
            table.rows.append(
                [
                    name,
                    path,
                    f"{measured['streams_ok']}/{streams}",
                    figures["count"],
                    figures["p50_ms"],
                    figures["p95_ms"],
                    figures["max_ms"],
                    figures["failures"],
                ]
            )
    result.tables.append(table)
    result.notes.append(
        "the platform as make run starts it (one worker batching up to MAX_CONCURRENCY, WEB_THREADS=320); "
        "mlx_lm.server on the same float32 folder with its default batching; the probe's time is the whole HTTP "
        "request from a client thread on the same two cores as the load"
    )
    result.raw = raw
    return result
