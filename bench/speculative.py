"""Section: speculative decoding inside the batch, on extractive work (a RAG answer quoting its sources, a summary
of a given text, an edit of a given code file) and on free text, one stream and eight.

Two parts in one run: the platform against ``mlx_lm.server`` over HTTP (aggregate tok/s, each request unique), and
the platform's batch engine in a child process with drafting and without (the same requests), which also gives
the share of draft tokens kept per task."""

from __future__ import annotations

import time
import traceback

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench import progress
from bench.client import TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL_DIR
from bench.inprocess import run_probe
from bench.load import run_clients, summarize
from bench.report import SectionResult, Table
from bench.speculative_tasks import TASKS, request_tag
from bench.targets import TARGETS, Skip

NAME = "speculative"
TITLE = "Speculative decoding inside the batch"
SERVERS = ("mlx-lm", "platform")
STREAMS = (1, 8)
DRAFT_TOKENS = 4
"""The platform's default ``SPECULATIVE_DRAFT_TOKENS``."""


def _draft_tokens(base_url: str, model: str) -> tuple[float, float]:
    """The platform's draft tokens checked and kept for ``model`` so far (``/metrics``, from the workers' beats)."""
    time.sleep(1.5)  # one heartbeat after the last request
    found = {"mlx_speculative_draft_tokens": 0.0, "mlx_speculative_accepted_tokens": 0.0}
    for family in text_string_to_metric_families(requests.get(f"{base_url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name.removesuffix("_total") in found and sample.labels.get("model") == model:
                found[sample.name.removesuffix("_total")] = sample.value
    return found["mlx_speculative_draft_tokens"], found["mlx_speculative_accepted_tokens"]


def _http(
    context: BenchContext, max_tokens: int, runs: int, kept: dict[tuple[str, int], tuple[float, float]]
) -> dict[str, dict[tuple[str, int], float]]:
    """Aggregate tok/s per server, task and number of streams (single stream: ``runs`` requests one after another);
    the platform's draft tokens checked and kept per task go into ``kept``."""
    measured: dict[str, dict[tuple[str, int], float]] = {}
    counter = TokenCounter()
    for server in SERVERS:
        label, start = TARGETS[server]
        try:
            with start(context) as target:
                client = make_client(target.base_url)
                stream_chat(client, target.model, TASKS["free text (a story)"][1]("warm-up"), 8, counter)
                cells: dict[tuple[str, int], float] = {}
                for task, (_extractive, build) in TASKS.items():
                    for streams in STREAMS:
                        before = _draft_tokens(target.base_url, target.model) if server == "platform" else (0, 0)
                        with progress.ticking(f"{label}: {task}, {streams} stream(s)"):
                            rounds = runs if streams == 1 else 1
                            timings = run_clients(
                                lambda c, i, cell=(task, streams), build=build, client=client, model=target.model: (
                                    stream_chat(client, model, build(request_tag(*cell, c, i)), max_tokens, counter)
                                ),
                                streams,
                                rounds,
                            )
                        summary = summarize(streams, timings)
                        if summary.errors:
                            raise RuntimeError(next(t.error for t in timings if not t.ok))
                        cells[(task, streams)] = summary.aggregate_tps
                        if server == "platform":
                            after = _draft_tokens(target.base_url, target.model)
                            kept[(task, streams)] = (after[0] - before[0], after[1] - before[1])
                        progress.say(f"{label}: {task}, {streams} stream(s): {summary.aggregate_tps:.1f} tok/s")
                measured[server] = cells
        except Skip as exc:
            progress.say(f"{label}: skipped ({exc})")
        except Exception:  # noqa: BLE001 - one server failing must not lose the other's figures
            traceback.print_exc()
    return measured


def run(context: BenchContext) -> SectionResult:
    options = context.options
    result = SectionResult(NAME, TITLE)
    max_tokens = 48 if options.quick else 200
    runs = 1 if options.quick else 2
    progress.say("the batch engine in a child process, with drafting and without")
    engine = run_probe(
        "speculative",
        {
            "path": str(CHAT_MODEL_DIR),
            "max_tokens": max_tokens,
            "streams": list(STREAMS),
            "runs": runs,
            "draft_tokens": DRAFT_TOKENS,
        },
    )
    acceptance = {}
    engine_table = Table(
        f"the platform's batch engine in one process, greedy, {max_tokens} max tokens, the same requests "
        f"without drafting and with it (SPECULATIVE_DRAFT_TOKENS={DRAFT_TOKENS})",
        [
            "task",
            "streams",
            "no drafting tok/s",
            "drafting tok/s",
            "speed-up",
            "speed-up per CPU second",
            "draft tokens kept",
            "checked steps",
        ],
    )
    for row in engine["rows"]:
        kept = row["accepted"] / row["drafted"] if row["drafted"] else None
        acceptance[(row["task"], row["streams"])] = kept
        engine_table.rows.append(
            [
                row["task"],
                row["streams"],
                row["plain_tps"],
                row["drafting_tps"],
                f"{row['drafting_tps'] / row['plain_tps']:.2f}x",
                f"{row['drafting_tokens_per_cpu_s'] / row['plain_tokens_per_cpu_s']:.2f}x",
                "–" if kept is None else f"{kept:.0%} of {row['drafted']}",
                row["checked_steps"],
            ]
        )
    kept: dict[tuple[str, int], tuple[float, float]] = {}
    measured = _http(context, max_tokens, runs, kept)
    versus = Table(
        f"over HTTP, greedy, {max_tokens} max tokens, aggregate tok/s (1 stream: {runs} requests in turn; "
        "8 streams: 8 at once); every request unique",
        ["task", "streams", "mlx_lm.server tok/s", "platform tok/s", "platform / mlx_lm.server", "draft tokens kept"],
    )
    for task in TASKS:
        for streams in STREAMS:
            theirs = measured.get("mlx-lm", {}).get((task, streams))
            ours = measured.get("platform", {}).get((task, streams))
            ratio = f"{ours / theirs:.2f}x" if ours and theirs else "–"
            drafted, accepted = kept.get((task, streams), (0, 0))
            share = f"{accepted / drafted:.0%} of {drafted:.0f}" if drafted else "–"
            versus.rows.append([task, streams, theirs or "–", ours or "–", ratio, share])
    result.tables.extend([versus, engine_table])
    http = {
        server: {f"{task} | {streams}": tps for (task, streams), tps in cells.items()}
        for server, cells in measured.items()
    }
    result.raw = {"engine": engine["rows"], "http": http}
    result.notes.append(
        "goals (issue 34): extractive work at least 1.5x mlx_lm.server's tok/s on one stream and 1.2x at 8 streams; "
        "free text within 5 % of no drafting"
    )
    return result
