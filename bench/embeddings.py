"""Section 6: sentence embeddings through ``POST /v1/embeddings`` against the same handler in-process."""

from __future__ import annotations

import time

from bench import progress
from bench.client import make_client
from bench.context import BenchContext
from bench.defaults import EMBEDDING_MODEL, EMBEDDING_MODEL_DIR
from bench.inprocess import run_probe
from bench.report import SectionResult, Table
from bench.stats import median, ratio

NAME = "embeddings"
TITLE = "Embeddings"
_SUBJECTS = ("The lighthouse", "A small robot", "The river", "Our new library", "The old train", "A quiet garden")
_VERBS = ("watches over", "slowly repairs", "floods", "opens onto", "crosses", "hides")
_OBJECTS = ("the harbour at night.", "a broken radio.", "the lower valley.", "the main square.", "the mountains.")


def sample_texts(count: int) -> list[str]:
    """``count`` distinct short sentences of varied length."""
    texts = []
    for index in range(count):
        subject = _SUBJECTS[index % len(_SUBJECTS)]
        verb = _VERBS[(index // len(_SUBJECTS)) % len(_VERBS)]
        thing = _OBJECTS[(index // 7) % len(_OBJECTS)]
        texts.append(f"{subject} {verb} {thing} " + "It was noted again. " * (index % 4) + f"(#{index})")
    return texts


def api_seconds(base_url: str, texts: list[str], batch_size: int, runs: int) -> list[float]:
    """Seconds to embed every text through the API in requests of ``batch_size``, per run, after a warm-up."""
    client = make_client(base_url)
    client.embeddings.create(model=EMBEDDING_MODEL, input=texts[:batch_size], encoding_format="float")
    seconds = []
    for index in range(runs):
        started = time.perf_counter()
        for start in range(0, len(texts), batch_size):
            client.embeddings.create(
                model=EMBEDDING_MODEL, input=texts[start : start + batch_size], encoding_format="float"
            )
        seconds.append(time.perf_counter() - started)
        progress.say(f"API batch {batch_size} run {index + 1}/{runs}: {seconds[-1]:.2f}s")
    return seconds


def run(context: BenchContext) -> SectionResult:
    """Texts/s per batch size, in-process (the worker's handler) and through the API."""
    options = context.options
    texts = sample_texts(options.embedding_texts)
    platform = context.platform()
    spec = {
        "path": str(EMBEDDING_MODEL_DIR),
        "texts": texts,
        "batch_sizes": options.embedding_batch_sizes,
        "runs": options.embedding_runs,
    }
    local = run_probe("embed", spec, openblas=True)["seconds"]
    api = {
        str(size): api_seconds(platform.base_url, texts, size, options.embedding_runs)
        for size in options.embedding_batch_sizes
    }
    result = SectionResult(NAME, TITLE)
    table = Table(
        f"{EMBEDDING_MODEL}, {len(texts)} texts, median of {options.embedding_runs} run(s)",
        ["texts per request", "in-process texts/s", "API texts/s", "API / in-process"],
    )
    for size in options.embedding_batch_sizes:
        local_rate = len(texts) / median(local[str(size)])
        api_rate = len(texts) / median(api[str(size)])
        share = ratio(api_rate, local_rate)
        table.rows.append([size, local_rate, api_rate, f"{share:.1%}" if share is not None else None])
    result.tables.append(table)
    result.notes.append(
        "in-process is the worker's own handler (models/handlers/embeddings.py, mlx-embeddings) with OpenBLAS; "
        "the API is POST /v1/embeddings with the openai client, float encoding"
    )
    result.raw = {"texts": len(texts), "in_process_s": local, "api_s": api}
    return result
