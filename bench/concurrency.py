"""Section 3: concurrent streaming clients against the platform (one and two workers) and the peers."""

from __future__ import annotations

import datetime as dt
import os
import traceback
from dataclasses import asdict
from pathlib import Path

from bench import progress
from bench.chart import Panel, line_chart
from bench.client import RequestTiming, TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, story_messages
from bench.environment import cpu_model
from bench.load import LevelSummary, run_clients, summarize
from bench.report import SectionResult, Table
from bench.targets import TARGETS, Skip, Target

NAME = "concurrency"
TITLE = "Concurrent streaming clients"


def measure(target: Target, levels: list[int], max_tokens: int, requests_per_client: int) -> list[LevelSummary]:
    """One untimed request, then each level of concurrent clients."""
    client, counter = make_client(target.base_url), TokenCounter()

    def request(tag: str) -> RequestTiming:
        return stream_chat(client, target.model, story_messages(tag), max_tokens, counter)

    warm = request("warm-up")
    if not warm.ok:
        raise Skip(f"the warm-up request failed: {warm.error}")
    summaries = []
    for level in levels:
        with progress.ticking(f"{level} concurrent clients × {requests_per_client} requests"):
            timings = run_clients(lambda c, i, lv=level: request(f"{lv}-{c}-{i}"), level, requests_per_client)
        summary = summarize(level, timings)
        summaries.append(summary)
        progress.say(
            f"{level} clients: {summary.aggregate_tps:.1f} tok/s in all, TTFT p95 "
            f"{summary.ttft_p95_s or 0:.2f}s, errors {summary.errors}"
        )
    return summaries


def run(context: BenchContext) -> SectionResult:
    """Every selected server at every level, then the table and the chart."""
    options = context.options
    result = SectionResult(NAME, TITLE)
    table = Table(
        f"{options.concurrency_tokens} max tokens per request, {options.requests_per_client} request(s) per client, "
        "greedy, each prompt unique",
        [
            "server",
            "clients",
            "requests",
            "errors",
            "aggregate tok/s",
            "TTFT p50 s",
            "TTFT p95 s",
            "end-to-end p50 s",
            "end-to-end p95 s",
        ],
    )
    by_server: dict[str, list[LevelSummary]] = {}
    raw: dict[str, object] = {}
    for server in options.servers:
        if server not in TARGETS:
            result.notes.append(f"{server}: unknown server; known: {', '.join(TARGETS)}")
            continue
        label, start = TARGETS[server]
        progress.say(f"server: {label}")
        try:
            with start(context) as target:
                summaries = measure(target, options.levels, options.concurrency_tokens, options.requests_per_client)
        except Skip as exc:
            progress.say(f"skipped {label}: {exc}")
            result.notes.append(f"{label}: skipped ({exc})")
            raw[server] = {"skipped": str(exc)}
            continue
        except Exception as exc:  # noqa: BLE001 - one server failing must not lose the others' figures
            traceback.print_exc()
            result.notes.append(f"{label}: failed ({type(exc).__name__}: {exc})")
            raw[server] = {"failed": f"{type(exc).__name__}: {exc}"}
            continue
        raw[server] = {"description": target.description, "levels": [asdict(s) for s in summaries]}
        counted = ", ".join(sorted({s.token_count for s in summaries if s.token_count}))
        result.notes.append(f"{label}: {target.description}; tokens counted from {counted or '–'}")
        by_server[label] = summaries
        for s in summaries:
            table.rows.append(
                [label, s.clients, s.requests, s.errors, s.aggregate_tps]
                + [s.ttft_p50_s, s.ttft_p95_s, s.e2e_p50_s, s.e2e_p95_s]
            )
            if s.first_error:
                result.notes.append(f"{label} at {s.clients} clients, first error: {s.first_error[:200]}")
    result.tables.append(table)
    result.raw = raw
    if by_server:
        result.charts.append(str(draw_chart(by_server, context)))
    return result


def draw_chart(by_server: dict[str, list[LevelSummary]], context: BenchContext) -> Path:
    """Aggregate tokens/s and time-to-first-token p95 against concurrency, one line per server."""
    options = context.options
    panels = [
        Panel(
            "Aggregate generated tokens/s", "tokens/s", {k: [s.aggregate_tps for s in v] for k, v in by_server.items()}
        ),
        Panel("Time to first token, p95", "seconds", {k: [s.ttft_p95_s for s in v] for k, v in by_server.items()}),
    ]
    subtitle = (
        f"{dt.date.today().isoformat()}; {CHAT_MODEL}, {options.concurrency_tokens} tokens per request, greedy; "
        f"{cpu_model()}, {os.cpu_count()} cores"
    )
    return line_chart(panels, [str(level) for level in options.levels], subtitle, context.out_dir / "concurrency.png")
