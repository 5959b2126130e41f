"""The benchmark runner: ``python -m bench [section ...] [--quick] [--out DIR]``.

Runs the chosen sections (all by default) in order, printing a table per
section, writing ``<out>/<section>.json`` and ``<out>/RESULTS.md`` (the
snippet for the README), and stopping every process it started.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import traceback
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

from bench import (
    adapters,
    agent,
    batch,
    chaos,
    concurrency,
    embeddings,
    health_under_load,
    idle,
    jobs,
    kv,
    lifecycle,
    media,
    overhead,
    prefix,
    progress,
    rag_quality,
    rag_scale,
    reconciler,
    redis_latency,
    speculative,
    weights,
)
from bench.context import BenchContext
from bench.defaults import RESULTS_DIR, ROOT
from bench.environment import describe
from bench.options import Options
from bench.report import SectionResult, environment_lines, load_results, print_section, results_markdown, write_json
from bench.stack import STACK_ENV
from bench.targets import TARGETS

SECTIONS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        weights,
        overhead,
        concurrency,
        prefix,
        speculative,
        kv,
        agent,
        lifecycle,
        jobs,
        embeddings,
        media,
        health_under_load,
        rag_quality,
        rag_scale,
        reconciler,
        redis_latency,
        chaos,
        batch,
        idle,
        adapters,
    )
}


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_options(argv: list[str] | None) -> tuple[list[str], Options, Path]:
    """The sections to run, their sizes, and the results folder, from the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("sections", nargs="*", metavar="section", help=f"any of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few tokens, one run, 1 and 2 clients")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"results folder (default {RESULTS_DIR})")
    parser.add_argument("--servers", help="concurrency: comma-separated subset of " + ",".join(TARGETS))
    parser.add_argument("--levels", type=_int_list, help="concurrency: client counts, e.g. 1,4,8,16")
    parser.add_argument("--formats", help="weights: comma-separated subset of q4,q8,float16,float32")
    parser.add_argument("--jobs", type=int, help="jobs: how many jobs to submit")
    parser.add_argument("--tokens", type=int, help="weights, overhead, concurrency: max tokens per request")
    parser.add_argument("--runs", type=int, help="weights, overhead, lifecycle, embeddings: timed runs")
    parser.add_argument("--questions", type=int, help="rag_quality: how many judged questions (0: all)")
    parser.add_argument(
        "--reranker-path",
        help="rag_quality: a folder with nanoranker installed, appended to sys.path ($MLXF_BENCH_RERANKER_PATH)",
    )
    parser.add_argument(
        "--rerankers", help="rag_quality: the platform's rerankers to measure, comma-separated: chat,cross-encoder"
    )
    parser.add_argument("--candidates", type=int, help="rag_quality: hybrid candidates each reranker sees (20)")
    parser.add_argument("--chunks", type=int, help="rag_scale: chunks in the collection (default 100000)")
    parser.add_argument("--queries", type=int, help="rag_scale: how many query vectors (default 500)")
    parser.add_argument("--minutes", type=float, help="chaos: how long faults come (default 10)")
    parser.add_argument("--lines", type=int, help="batch: requests streamed and sent as one batch (default 1000)")
    parser.add_argument("--batch-lines", type=int, help="batch: lines of the batch beside interactive clients (2000)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    options = Options.smoke() if args.quick else Options()
    if args.servers:
        options.servers = args.servers.split(",")
    if args.levels:
        options.levels = args.levels
    if args.formats:
        options.weights_formats = args.formats.split(",")
    if args.jobs:
        options.jobs = args.jobs
    if args.tokens:
        options.weights_tokens = options.overhead_tokens = options.concurrency_tokens = args.tokens
    if args.runs:
        options.weights_runs = options.overhead_runs = options.lifecycle_runs = options.embedding_runs = (
            options.media_runs
        ) = args.runs
    if args.questions is not None:
        options.rag_questions = args.questions
    if args.reranker_path:
        options.rag_reranker_path = args.reranker_path
    if args.rerankers is not None:
        options.rag_rerankers = [name for name in args.rerankers.split(",") if name]
    if args.candidates:
        options.rag_rerank_candidates = args.candidates
    if args.chunks:
        options.rag_scale_chunks = args.chunks
    if args.queries:
        options.rag_scale_queries = args.queries
    if args.minutes:
        options.chaos_minutes = args.minutes
    if args.lines:
        options.batch_lines = args.lines
    if args.batch_lines:
        options.batch_ttft_lines = args.batch_lines
    return args.sections or list(SECTIONS), options, args.out


def run_section(name: str, context: BenchContext) -> tuple[SectionResult, bool]:
    """Runs one section; a failure is reported as the section's result, not raised."""
    module = SECTIONS[name]
    progress.set_section(name)
    try:
        return module.run(context), True
    except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others' figures
        traceback.print_exc()
        return SectionResult(name, module.TITLE, skipped=f"failed: {type(exc).__name__}: {exc}"), False


def main(argv: list[str] | None = None) -> int:
    """Runs the sections, then writes RESULTS.md from every section's latest JSON in the results folder."""
    sections, options, out_dir = parse_options(argv)
    progress.say("describing the machine and backend")
    environment = describe(STACK_ENV)
    print("\n".join(environment_lines(environment)))
    print(f"sections: {', '.join(sections)}{' (quick smoke run)' if options.quick else ''}; results in {out_dir}")
    context = BenchContext(options, out_dir)
    failed = []
    try:
        for name in sections:
            started_at = dt.datetime.now().astimezone().isoformat(timespec="seconds")
            result, ok = run_section(name, context)
            if not ok:
                failed.append(name)
            print_section(result)
            finished_at = dt.datetime.now().astimezone().isoformat(timespec="seconds")
            context_fields = {
                "environment": environment,
                "options": asdict(options),
                "started_at": started_at,
                "finished_at": finished_at,
            }
            write_json(result, out_dir, context_fields)
    finally:
        progress.set_section("bench")
        context.close()
    snippet = out_dir / "RESULTS.md"
    charts_dir = out_dir.resolve().relative_to(ROOT) if out_dir.resolve().is_relative_to(ROOT) else out_dir.resolve()
    snippet.write_text(results_markdown(load_results(out_dir, list(SECTIONS)), str(charts_dir)))
    print(f"\nresults: {out_dir}/*.json; README snippet: {snippet}")
    if failed:
        print(f"failed sections: {', '.join(failed)} (see the tracebacks above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
