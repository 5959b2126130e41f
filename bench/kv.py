"""Section: the KV cache quantised to 8 and 4 bits (``kv_bits`` at a model's load) against full precision.

Two parts in one run: the platform's batch engine in a child process per setting (bytes per token, greedy
agreement with full precision over 50 questions, decode tok/s with a long prompt, the rows a KV budget holds), and
over HTTP the platform with the model loaded with ``kv_bits`` 8 against ``mlx_lm.server --kv-bits 8`` (which then
serves one request at a time: its batch has no quantised cache)."""

from __future__ import annotations

import traceback

from bench import progress
from bench.client import TokenCounter, make_client, stream_chat
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL_DIR, openblas_library
from bench.inprocess import run_probe
from bench.load import run_clients, summarize
from bench.probes.kv import LONG_TEXT
from bench.report import SectionResult, Table
from bench.servers import start_mlx_lm_server

NAME = "kv"
TITLE = "Quantised KV cache (kv_bits)"
BITS = (None, 8, 4)
STREAMS = (1, 8)
HTTP_BITS = 8
CONTEXT_TOKENS = 4096
BUDGET_GB = 4.0
"""``ENGINE_KV_BUDGET_GB``'s default."""


def _http(context: BenchContext, long_tokens: int, max_tokens: int) -> dict[str, dict[int, float]]:
    """Aggregate tok/s per server and number of streams, every request a long prompt of its own."""
    prompt = (LONG_TEXT * 200)[: long_tokens * 5]
    counter = TokenCounter()
    measured: dict[str, dict[int, float]] = {}

    def measure(label: str, base_url: str, model: str) -> dict[int, float]:
        client = make_client(base_url)
        stream_chat(client, model, [{"role": "user", "content": "Hello"}], 4, counter)
        cells = {}
        for streams in STREAMS:
            with progress.ticking(f"{label}: {streams} stream(s)"):
                timings = run_clients(
                    lambda c, i, streams=streams: stream_chat(
                        client,
                        model,
                        [{"role": "user", "content": f"({label} {streams} {c} {i}) {prompt}"}],
                        max_tokens,
                        counter,
                    ),
                    streams,
                    1,
                )
            summary = summarize(streams, timings)
            if summary.errors:
                raise RuntimeError(next(t.error for t in timings if not t.ok))
            cells[streams] = summary.aggregate_tps
            progress.say(f"{label}: {streams} stream(s): {summary.aggregate_tps:.1f} tok/s")
        return cells

    try:
        platform = context.platform()
        model_id = f"bench/kv{HTTP_BITS}"
        progress.say(f"loading {model_id} with kv_bits {HTTP_BITS}")
        platform.load(CHAT_MODEL_DIR, model_id, kv_bits=HTTP_BITS, max_concurrency=max(STREAMS))
        try:
            platform.wait_for_workers(model_id, 1)
            measured["platform"] = measure("platform", platform.base_url, model_id)
        finally:
            platform.unload(model_id)
    except Exception:  # noqa: BLE001 - one server failing must not lose the other's figures
        traceback.print_exc()
    flags = ["--kv-bits", str(HTTP_BITS), "--quantized-kv-start", "0"]
    progress.say(f"starting mlx_lm.server {' '.join(flags)}")
    try:
        server = start_mlx_lm_server(CHAT_MODEL_DIR, context.log_dir, openblas_library(), flags)
        try:
            measured["mlx-lm"] = measure("mlx_lm.server", server.base_url, "default_model")
        finally:
            server.stop()
    except Exception:  # noqa: BLE001
        traceback.print_exc()
    return measured


def run(context: BenchContext) -> SectionResult:
    options = context.options
    result = SectionResult(NAME, TITLE)
    prompts = 16 if options.quick else 50
    long_tokens = 256 if options.quick else 1024
    rate_tokens = 16 if options.quick else 64
    progress.say("the batch engine in a child process per kv_bits")
    engine = run_probe(
        "kv",
        {
            "path": str(CHAT_MODEL_DIR),
            "bits": list(BITS),
            "prompts": prompts,
            "max_tokens": 32,
            "streams": list(STREAMS),
            "long_tokens": long_tokens,
            "rate_tokens": rate_tokens,
            "context_tokens": CONTEXT_TOKENS,
            "budget_gb": BUDGET_GB,
        },
    )
    table = Table(
        f"the platform's batch engine in one process, greedy; answers: {prompts} questions, 32 max tokens, "
        f"compared with full precision's; decode: a prompt of {engine['long_prompt_tokens']} tokens per stream, "
        f"{rate_tokens} tokens each, tok/s after every stream's first token",
        [
            "kv_bits",
            "bytes/token (budget)",
            "bytes/token (allocated)",
            "answers as full precision",
            "matching prefix",
            *[f"decode tok/s, {s} stream(s)" for s in STREAMS],
            *[f"first tokens of {s} stream(s), s" for s in STREAMS],
            f"rows of {CONTEXT_TOKENS} tokens in {BUDGET_GB:g} GB",
        ],
    )
    for row in engine["rows"]:
        table.rows.append(
            [
                row["bits"] or "full (float32)",
                row["bytes_per_token"],
                round(row["measured_bytes_per_token"]),
                f"{row['identical_answers']}/{row['answers']}",
                f"{row['matching_prefix_share']:.0%}",
                *[row["decode_tps"][str(s)] for s in STREAMS],
                *[row["all_first_tokens_s"][str(s)] for s in STREAMS],
                row["rows_in_budget"],
            ]
        )
    measured = _http(context, long_tokens, rate_tokens)
    versus = Table(
        f"over HTTP, kv_bits {HTTP_BITS} on both (mlx_lm.server: --kv-bits {HTTP_BITS} --quantized-kv-start 0), "
        f"greedy, a prompt of about {long_tokens} tokens each, {rate_tokens} max tokens, aggregate tok/s",
        ["streams", "mlx_lm.server tok/s", "platform tok/s", "platform / mlx_lm.server"],
    )
    for streams in STREAMS:
        theirs = measured.get("mlx-lm", {}).get(streams)
        ours = measured.get("platform", {}).get(streams)
        ratio = f"{ours / theirs:.2f}x" if ours and theirs else "–"
        versus.rows.append([streams, theirs or "–", ours or "–", ratio])
    result.tables.extend([table, versus])
    result.raw = {"engine": engine, "http": {k: {str(s): v for s, v in c.items()} for k, c in measured.items()}}
    result.notes.append(
        "mlx_lm.server turns batching off when --kv-bits is set (its help says so); the platform batches quantised rows"
    )
    return result
