"""A large collection in-process: real documents extracted and chunked by the platform's own code, embedded once
by the worker's embeddings handler (cached under ``.data/bench``), ingested into a ``LanceDBStore`` one upsert per
document as the platform does, then queried one at a time with real query embeddings, scored against exact search.

Returns the corpus and embedding figures, every upsert's time (and what index work it did), and per stage of the
collection (after ingest, optimized, rows appended unindexed, optimized again) each query's latency and recall.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import progress

if TYPE_CHECKING:
    import numpy as np

COLLECTION = "bench-scale"
CACHE_FORMAT = 1
"""Bumped when the cache's layout or the way the corpus is cut changes, so old caches are not mistaken for new."""
EMBED_BLOCK = 1024
"""Texts handed to ``handler.embed`` at a time while filling the cache (it batches them 32 at a time)."""
WARMUP_QUERIES = 20
TIE_TOLERANCE = 1e-5
QUERY_SEED = 11


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# -- corpus --------------------------------------------------------------------------------------------------


def corpus_files(documents_dir: Path, html_dir: str) -> list[Path]:
    """bash-doc's files and the Python docs' HTML pages, in path order (bash-doc first, holding bash.pdf)."""
    bash = sorted(path for path in (documents_dir / "bash-doc").rglob("*") if path.is_file())
    html = sorted((documents_dir / html_dir).rglob("*.html"))
    return [path for path in bash + html if not path.name.startswith(".")]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(files: list[Path], documents_dir: Path, model_dir: Path, chunk_size: int, overlap: int) -> str:
    """sha256 of the documents (paths and bytes), the embedding model's files and the chunking, shortened."""
    digest = hashlib.sha256(f"rag-scale {CACHE_FORMAT} {chunk_size} {overlap}\n".encode())
    for path in files:
        digest.update(f"doc {path.relative_to(documents_dir)} {file_digest(path)}\n".encode())
    for path in sorted(item for item in model_dir.rglob("*") if item.is_file()):
        digest.update(f"model {path.relative_to(model_dir)} {file_digest(path)}\n".encode())
    return digest.hexdigest()[:16]


def build_corpus(
    files: list[Path], documents_dir: Path, model_dir: Path, chunk_size: int, overlap: int
) -> dict[str, Any]:
    """Every file ``rag.extract`` reads, chunked by ``rag.chunking``: per document its name and chunk range,
    per chunk its text, page, index in its document and token count."""
    from rag.chunking import chunk_document
    from rag.extract import ExtractionError, extract

    documents: list[dict[str, Any]] = []
    skipped: list[str] = []
    texts: list[str] = []
    pages: list[int | None] = []
    indices: list[int] = []
    tokens: list[int] = []
    extract_s = chunk_s = 0.0
    for number, path in enumerate(files, start=1):
        name = str(path.relative_to(documents_dir))
        started = time.perf_counter()
        try:
            document = extract(path.name, path.read_bytes())
        except ExtractionError as exc:
            skipped.append(f"{name}: {exc.reason}")
            continue
        finally:
            extract_s += time.perf_counter() - started
        started = time.perf_counter()
        chunks = chunk_document(document, model_dir, chunk_size, overlap)
        chunk_s += time.perf_counter() - started
        if not chunks:
            skipped.append(f"{name}: no chunks")
            continue
        documents.append({"file": name, "kind": document.kind, "start": len(texts), "chunks": len(chunks)})
        for chunk in chunks:
            texts.append(chunk.text)
            pages.append(chunk.page)
            indices.append(chunk.index)
            tokens.append(chunk.token_count)
        if number % 100 == 0 or number == len(files):
            progress.say(f"corpus: {number}/{len(files)} files read, {len(texts)} chunks")
    return {
        "documents": documents,
        "skipped": skipped,
        "texts": texts,
        "pages": pages,
        "chunk_indices": indices,
        "tokens": tokens,
        "extract_s": extract_s,
        "chunk_s": chunk_s,
    }


def write_json_gz(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as handle:
        json.dump(value, handle)
    partial.replace(path)


def read_json_gz(path: Path) -> dict[str, Any]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return json.load(handle)


# -- embeddings ----------------------------------------------------------------------------------------------


def fill_cache(
    handler: Any, corpus: dict[str, Any], vectors_path: Path, sidecar_path: Path, needed: int
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The vectors of the corpus's first ``needed`` chunks (at least), embedding whatever the cache lacks and
    saving it; returns them and this run's embedding figures (None when the cache held them all)."""
    import numpy as np

    cached = np.load(vectors_path) if vectors_path.exists() else np.zeros((0, 0), dtype=np.float32)
    have = len(cached)
    if have >= needed:
        return cached, None
    texts = corpus["texts"][have:needed]
    progress.say(f"embedding {len(texts)} chunks (cache holds {have}); this takes a while the first time")
    parts = [cached] if have else []
    tokens = 0
    load_before = load_average()
    started = time.perf_counter()
    for offset in range(0, len(texts), EMBED_BLOCK):
        block, block_tokens = handler.embed(texts[offset : offset + EMBED_BLOCK])
        parts.append(np.asarray(block, dtype=np.float32))
        tokens += block_tokens
        done = offset + len(block)
        if done % (10 * EMBED_BLOCK) < EMBED_BLOCK or done == len(texts):
            elapsed = time.perf_counter() - started
            rate = done / elapsed
            progress.say(
                f"embedded {done}/{len(texts)} chunks, {rate:.1f} chunks/s, "
                f"about {(len(texts) - done) / rate / 60:.0f} min left (load {load_average()})"
            )
    seconds = time.perf_counter() - started
    vectors = np.concatenate(parts)
    partial = vectors_path.with_name(vectors_path.stem + ".partial.npy")
    np.save(partial, vectors)
    partial.replace(vectors_path)
    run = {
        "at": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "first_chunk": have,
        "chunks": len(texts),
        "tokens": tokens,
        "seconds": seconds,
        "chunks_per_s": len(texts) / seconds,
        "tokens_per_s": tokens / seconds,
        "load_before": load_before,
        "load_after": load_average(),
    }
    corpus.setdefault("embedding_runs", []).append(run)
    corpus["embedded"] = len(vectors)
    write_json_gz(sidecar_path, corpus)
    progress.say(f"embedded {len(texts)} chunks in {seconds:.0f}s ({run['chunks_per_s']:.1f} chunks/s); cached")
    return vectors, run


# -- store ---------------------------------------------------------------------------------------------------


def measured_store_class() -> type:
    """``LanceDBStore`` whose index upkeep (run at the end of every upsert) is timed and recorded."""
    from rag.lancedb_store import _VECTOR_INDEX, LanceDBStore

    class MeasuredStore(LanceDBStore):
        def __init__(self, path: Path | str, **kwargs: Any) -> None:
            super().__init__(path, **kwargs)
            self.upkeep: list[dict[str, Any]] = []

        def _maintain_indices(self, table: Any) -> None:
            before = unindexed_rows(table)
            started = time.perf_counter()
            super()._maintain_indices(table)
            seconds = time.perf_counter() - started
            after = unindexed_rows(table)
            if before is None and after is not None:
                action = "build"
            elif before is not None and after is not None and after < before:
                action = "optimize"
            else:
                action = None
            self.upkeep.append({"action": action, "seconds": seconds, "unindexed_before": before})

    def unindexed_rows(table: Any) -> int | None:
        if _VECTOR_INDEX not in {index.name for index in table.list_indices()}:
            return None
        stats = table.index_stats(_VECTOR_INDEX)
        return None if stats is None else stats.num_unindexed_rows

    MeasuredStore.unindexed_rows = staticmethod(unindexed_rows)  # type: ignore[attr-defined]
    return MeasuredStore


def document_slices(documents: list[dict[str, Any]], start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """``(document number, first chunk, end chunk)`` of the documents' chunks within ``[start, end)``."""
    for number, document in enumerate(documents):
        low = max(start, document["start"])
        high = min(end, document["start"] + document["chunks"])
        if low < high:
            yield number, low, high


def ingest(
    store: Any, corpus: dict[str, Any], vectors: np.ndarray, start: int, end: int, log_every: int = 10_000
) -> list[dict[str, Any]]:
    """Rows ``[start, end)`` upserted one document at a time; per upsert its rows, seconds and index upkeep."""
    from rag.ingest import chunk_id
    from rag.vectors import ChunkRecord

    upserts = []
    logged = start
    for number, low, high in document_slices(corpus["documents"], start, end):
        document_id = f"scale-doc-{number:04d}"
        file = corpus["documents"][number]["file"]
        rows = vectors[low:high].tolist()
        records = [
            ChunkRecord(
                chunk_id=chunk_id(document_id, corpus["chunk_indices"][row]),
                vector=vector,
                text=corpus["texts"][row],
                document_id=document_id,
                file=file,
                page=corpus["pages"][row],
                chunk_index=corpus["chunk_indices"][row],
                metadata={},
            )
            for row, vector in zip(range(low, high), rows, strict=True)
        ]
        started = time.perf_counter()
        store.upsert(COLLECTION, records)
        seconds = time.perf_counter() - started
        upkeep = store.upkeep[-1]
        upserts.append(
            {
                "rows_before": low,
                "rows": high - low,
                "seconds": seconds,
                "upkeep": upkeep["action"],
                "upkeep_seconds": upkeep["seconds"],
                "unindexed_before": upkeep["unindexed_before"],
            }
        )
        if upkeep["action"]:
            progress.say(f"upsert at {high} rows: {upkeep['action']} took {upkeep['seconds']:.1f}s")
        if high - logged >= log_every or high == end:
            logged = high
            progress.say(f"stored {high - start}/{end - start} rows")
    return upserts


# -- queries -------------------------------------------------------------------------------------------------


def query_texts(
    questions: list[str], corpus: dict[str, Any], used: int, count: int
) -> tuple[list[str], list[str], bool]:
    """``count`` queries: the judged questions (three in four at most, spread over the set), then chunk texts of
    the corpus never stored (or, when every chunk is stored, of the collection), sampled with a fixed seed."""
    wanted = min(len(questions), count - count // 4)
    asked = [questions[index * len(questions) // wanted] for index in range(wanted)] if wanted else []
    rest = count - len(asked)
    held_out = range(used, len(corpus["texts"]))
    from_collection = len(held_out) < rest
    pool = range(used) if from_collection else held_out
    rng = random.Random(QUERY_SEED)
    sampled = [corpus["texts"][row] for row in sorted(rng.sample(pool, rest))] if rest else []
    return asked, sampled, from_collection


class Oracle:
    """Exact cosine top-k over the first rows of the corpus's vectors (numpy, float32), per query."""

    def __init__(self, vectors: np.ndarray, queries: np.ndarray, top_k: int) -> None:
        import numpy as np

        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.vectors = (vectors / np.where(norms == 0, 1, norms)).astype(np.float32)
        self.queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        self.top_k = top_k
        self.cache: dict[int, tuple[list[np.ndarray], list[float]]] = {}

    def exact(self, rows: int) -> tuple[list[np.ndarray], list[float]]:
        """Per query the exact top-k rows among the first ``rows`` (best first), and the ms numpy took for each."""
        import numpy as np

        if rows not in self.cache:
            matrix = self.vectors[:rows]
            found, ms = [], []
            for query in self.queries:
                started = time.perf_counter()
                scores = matrix @ query
                top = np.argpartition(-scores, self.top_k)[: self.top_k]
                top = top[np.argsort(-scores[top])]
                ms.append((time.perf_counter() - started) * 1000)
                found.append(top)
            self.cache[rows] = (found, ms)
        return self.cache[rows]

    def recall(self, rows: int, found_rows: list[list[int]]) -> dict[str, list[float]]:
        """Per query: the share of the exact top k that was found, counting a found row whose exact similarity
        ties the k-th best as one of them (``tied``), and by row identity alone (``strict``)."""
        exact, _ms = self.exact(rows)
        tied, strict = [], []
        for query, truth, found in zip(self.queries, exact, found_rows, strict=True):
            kth = float(self.vectors[truth[-1]] @ query)
            scores = self.vectors[found] @ query if found else []
            tied.append(sum(1 for score in scores if score >= kth - TIE_TOLERANCE) / self.top_k)
            strict.append(len(set(found) & set(truth.tolist())) / self.top_k)
        return {"tied": tied, "strict": strict}


def timed_queries(
    search: Callable[[list[float]], list[str]], vectors: list[list[float]], rows_of: dict[str, int]
) -> tuple[list[float], list[list[int]]]:
    """Each query once, one at a time, after ``WARMUP_QUERIES`` untimed ones: ms and the rows found."""
    for vector in vectors[:WARMUP_QUERIES]:
        search(vector)
    ms, found = [], []
    for vector in vectors:
        started = time.perf_counter()
        ids = search(vector)
        ms.append((time.perf_counter() - started) * 1000)
        found.append([rows_of[chunk] for chunk in ids])
    return ms, found


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"documents_dir", "html_dir", "model_dir", "cache_dir", "questions_path", "chunk_size", "overlap",
    "chunks", "appends", "queries", "top_k", "index_min_rows", "exact_lancedb"}``: see the module's docstring."""
    import numpy as np

    from models.handlers.embeddings import load
    from rag.ingest import chunk_id
    from rag.lancedb_store import _COLUMNS, SEARCH_EF, SEARCH_REFINE_FACTOR, VECTOR_INDEX_MIN_ROWS

    started_run = time.perf_counter()
    documents_dir, model_dir, cache_dir = Path(spec["documents_dir"]), Path(spec["model_dir"]), Path(spec["cache_dir"])
    chunk_size, overlap, top_k = spec["chunk_size"], spec["overlap"], spec["top_k"]

    # Corpus: extracted and chunked once, kept in the cache's sidecar.
    files = corpus_files(documents_dir, spec["html_dir"])
    started = time.perf_counter()
    key = cache_key(files, documents_dir, model_dir, chunk_size, overlap)
    key_s = time.perf_counter() - started
    cache_dir.mkdir(parents=True, exist_ok=True)
    vectors_path = cache_dir / f"rag-scale-{key}.npy"
    sidecar_path = cache_dir / f"rag-scale-{key}.json.gz"
    if sidecar_path.exists():
        corpus = read_json_gz(sidecar_path)
        corpus_cached = True
        progress.say(f"corpus from cache {sidecar_path.name}: {len(corpus['texts'])} chunks")
    else:
        progress.say(f"reading {len(files)} files into chunks of {chunk_size} tokens (overlap {overlap})")
        corpus = build_corpus(files, documents_dir, model_dir, chunk_size, overlap)
        corpus.update(
            {
                "key": key,
                "format": CACHE_FORMAT,
                "model_dir": str(model_dir),
                "chunk_size": chunk_size,
                "overlap": overlap,
                "embedded": 0,
                "embedding_runs": [],
            }
        )
        write_json_gz(sidecar_path, corpus)
        corpus_cached = False
    total = len(corpus["texts"])

    # The collection's rows: the first ``base`` chunks, then the appended ones after them.
    appends = sorted(spec["appends"])
    largest = max(appends, default=0.0)
    base = spec["chunks"]
    if base + math.ceil(base * largest) > total:
        base = int(total / (1 + largest))
        progress.say(f"the corpus has {total} chunks: the collection gets {base} (+{largest:.0%} appended)")
    steps = [base + math.ceil(base * fraction) for fraction in appends]
    used = steps[-1] if steps else base

    started = time.perf_counter()
    handler = load(model_dir)
    handler.warmup()
    model_load_s = time.perf_counter() - started
    vectors, embedded_now = fill_cache(handler, corpus, vectors_path, sidecar_path, used)
    vectors = vectors[:used]

    # Queries: real questions and unstored chunk texts, embedded now (a few seconds).
    questions = [json.loads(line)["question"] for line in Path(spec["questions_path"]).read_text().splitlines() if line]
    asked, sampled, from_collection = query_texts(questions, corpus, used, spec["queries"])
    texts = asked + sampled
    started = time.perf_counter()
    query_vectors, _tokens = handler.embed(texts)
    query_embed_s = time.perf_counter() - started
    progress.say(f"embedded {len(texts)} queries in {query_embed_s:.1f}s")
    oracle = Oracle(vectors, np.asarray(query_vectors, dtype=np.float32), top_k)

    rows_of = {}
    for number, low, high in document_slices(corpus["documents"], 0, used):
        for row in range(low, high):
            rows_of[chunk_id(f"scale-doc-{number:04d}", corpus["chunk_indices"][row])] = row

    index_min_rows = spec["index_min_rows"] or VECTOR_INDEX_MIN_ROWS
    stages: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mlxf-bench-scale-", dir=spec.get("store_dir")) as folder:
        store = measured_store_class()(folder, vector_index_min_rows=index_min_rows)
        store.ensure_collection(COLLECTION, vectors.shape[1])

        def table() -> Any:
            return store.db.open_table(COLLECTION)

        def search(vector: list[float]) -> list[str]:
            return [hit.chunk_id for hit in store.search(COLLECTION, vector, top_k=top_k)]

        def search_exact(vector: list[float]) -> list[str]:
            query = table().search(vector, vector_column_name="vector").distance_type("cosine").bypass_vector_index()
            return [row["chunk_id"] for row in query.select([*_COLUMNS, "_distance"]).limit(top_k).to_list()]

        def search_open_table(opened: Any) -> Callable[[list[float]], list[str]]:
            """The store's query on a table opened once, not per search as ``store.search`` opens it."""

            def search(vector: list[float]) -> list[str]:
                query = opened.search(vector, vector_column_name="vector").distance_type("cosine")
                query = query.ef(SEARCH_EF).refine_factor(SEARCH_REFINE_FACTOR).select([*_COLUMNS, "_distance"])
                return [row["chunk_id"] for row in query.limit(top_k).to_list()]

            return search

        def measure(stage: str, rows: int, how: Callable[[list[float]], list[str]] = search) -> dict[str, Any]:
            unindexed = store.unindexed_rows(table())
            load_before = load_average()
            began = time.perf_counter()
            ms, found = timed_queries(how, query_vectors, rows_of)
            recall = oracle.recall(rows, found)
            entry = {
                "stage": stage,
                "rows": rows,
                "stored": table().count_rows(),
                "unindexed": unindexed,
                "ms": [round(value, 3) for value in ms],
                "recall_tied": recall["tied"],
                "recall_strict": recall["strict"],
                "seconds": time.perf_counter() - began,
                "load_before": load_before,
                "load_after": load_average(),
            }
            stages.append(entry)
            ordered = sorted(ms)
            progress.say(
                f"{stage}: {rows} rows ({unindexed} unindexed), p50 {ordered[len(ms) // 2]:.1f} ms, "
                f"recall@{top_k} {sum(recall['tied']) / len(ms):.3f}"
            )
            return entry

        def optimize(label: str) -> dict[str, Any]:
            unindexed = store.unindexed_rows(table())
            rows = table().count_rows()
            began = time.perf_counter()
            store.settle(COLLECTION)  # what the platform's ingest does at its end
            seconds = time.perf_counter() - began
            progress.say(f"{label}: optimize folded {unindexed} rows in {seconds:.1f}s")
            return {"label": label, "rows": rows, "unindexed_before": unindexed, "seconds": seconds}

        progress.say(f"ingesting {base} rows, one upsert per document (vector index at {index_min_rows} rows)")
        load_before = load_average()
        began = time.perf_counter()
        upserts = ingest(store, corpus, vectors, 0, base)
        ingest_s = time.perf_counter() - began
        ingest_load = [load_before, load_average()]

        optimizes = []
        measure("after ingest", base)
        if store.unindexed_rows(table()):
            optimizes.append(optimize("after ingest"))
        measure("optimized", base)
        measure("optimized, query on a table opened once", base, search_open_table(table()))
        exact_lancedb = (
            measure("exact LanceDB (bypass_vector_index)", base, search_exact) if spec["exact_lancedb"] else None
        )
        appended: list[dict[str, Any]] = []
        previous = base
        for fraction, step in zip(appends, steps, strict=True):
            appended.append({"fraction": fraction, "upserts": ingest(store, corpus, vectors, previous, step)})
            previous = step
            measure(f"+{fraction:.0%} appended", step)
        if appends:
            optimizes.append(optimize(f"after +{largest:.0%}"))
            measure(f"optimized after +{largest:.0%}", used)

    numpy_ms = {str(rows): oracle.exact(rows)[1] for rows in (base, used)}
    return {
        "key": key,
        "key_s": key_s,
        "cache": {"vectors": str(vectors_path), "sidecar": str(sidecar_path), "corpus_cached": corpus_cached},
        "documents": len(corpus["documents"]),
        "documents_skipped": corpus["skipped"],
        "corpus_chunks": total,
        "chunk_size": chunk_size,
        "overlap": overlap,
        "tokens_mean": sum(corpus["tokens"][:used]) / used,
        "extract_s": corpus["extract_s"],
        "chunk_s": corpus["chunk_s"],
        "embedding_runs": corpus["embedding_runs"],
        "embedded_now": embedded_now,
        "model_load_s": model_load_s,
        "base": base,
        "steps": steps,
        "appends": appends,
        "dimension": int(vectors.shape[1]),
        "queries": {"questions": len(asked), "chunks": len(sampled), "chunks_from_collection": from_collection},
        "query_embed_s": query_embed_s,
        "index_min_rows": index_min_rows,
        "search": {"ef": SEARCH_EF, "refine_factor": SEARCH_REFINE_FACTOR, "top_k": top_k},
        "ingest_s": ingest_s,
        "ingest_load": ingest_load,
        "upserts": upserts,
        "appended": appended,
        "optimizes": optimizes,
        "stages": stages,
        "exact_lancedb": exact_lancedb is not None,
        "numpy_ms": numpy_ms,
        "run_s": time.perf_counter() - started_run,
    }
