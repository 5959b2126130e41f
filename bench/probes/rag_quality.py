"""Retrieval on judged questions in-process: bash.pdf through the platform's own ingest, embeddings handler,
LanceDB store and ``rag.retrieval.retrieve``, in vector, hybrid and reranked (nanoranker) modes.

Returns what each mode ranked (page and chunk of every hit) and the timings; the section scores them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import progress

COLLECTION = "bench-bash"
DOCUMENT_ID = "bench-bash-pdf"


def load_reranker(path: str) -> tuple[Callable[[str, list[str]], list[float]] | None, dict[str, Any]]:
    """nanoranker's ``rank`` as a ``rag.retrieval.Rerank`` (one score per passage, in the order given), or None
    and why. ``path`` (a test install's folder) is appended to ``sys.path``, so it never shadows the venv."""
    if path and path not in sys.path:
        sys.path.append(path)
    try:
        nanoranker = importlib.import_module("nanoranker")
    except ImportError as exc:
        return None, {"skipped": "nanoranker not installed", "error": str(exc)}
    try:
        version = importlib.metadata.version("nanoranker")
    except importlib.metadata.PackageNotFoundError:
        version = None
    info = {"version": version, "module": str(Path(nanoranker.__file__).parent), "skipped": None}

    def rerank(query: str, passages: list[str]) -> list[float]:
        # rank() returns (passage, score) pairs sorted best first; equal texts get equal scores.
        ranked = nanoranker.rank(query, passages, top_n=len(passages), normalize_scores=False)
        scores = {text: float(score) for text, score in ranked}
        return [scores[text] for text in passages]

    return rerank, info


def load_platform_rerankers(spec: dict[str, Any]) -> dict[str, tuple[Callable[[str, list[str]], list[float]], dict]]:
    """The platform's own rerankers, as ``POST /v1/rerank`` runs them: the chat model pointwise
    (``rerank_chat``) and the catalog's cross-encoder (``rerank_cross``, random weights), each a
    ``rag.retrieval.Rerank``."""
    from models.handlers import load_handler
    from models.handlers.base import ServingLimits

    found: dict[str, tuple[Callable[[str, list[str]], list[float]], dict]] = {}
    wanted = spec.get("rerankers") or []
    if "chat" in wanted and spec.get("chat_model_dir"):
        chat = load_handler("lm", Path(spec["chat_model_dir"]), 2048, ServingLimits())

        def by_chat(query: str, passages: list[str]) -> list[float]:
            return chat.relevance([(query, passage) for passage in passages])[0]

        found["rerank_chat"] = (by_chat, {"model_dir": spec["chat_model_dir"], "skipped": None})
    if "cross-encoder" in wanted and spec.get("cross_encoder_dir"):
        if not Path(spec["cross_encoder_dir"]).exists():
            return found
        cross = load_handler("rerank", Path(spec["cross_encoder_dir"]))

        def by_cross(query: str, passages: list[str]) -> list[float]:
            return cross.score([(query, passage) for passage in passages])[0]

        found["rerank_cross"] = (by_cross, {"model_dir": spec["cross_encoder_dir"], "skipped": None})
    return found


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"pdf", "filename", "model_dir", "questions_path", "ids", "top_k", "rerank_candidates",
    "reranker_path"}``: ingest timings, chunks per page, and per question what each mode ranked and its times."""
    from models.handlers.embeddings import load
    from rag.chunking import DEFAULT_CHUNK_SIZE, DEFAULT_OVERLAP
    from rag.ingest import chunk_records, max_chunk_tokens, prepare
    from rag.lancedb_store import LanceDBStore
    from rag.retrieval import retrieve
    from rag.vectors import Hit

    model_dir = Path(spec["model_dir"])
    top_k, pool_size = spec["top_k"], spec["rerank_candidates"]
    wanted = set(spec["ids"])
    questions = [
        row for row in map(json.loads, Path(spec["questions_path"]).read_text().splitlines()) if row.get("id") in wanted
    ]

    # The platform's chunking defaults for this model (tasks/rag_service.py: _chunking).
    chunk_size = min(DEFAULT_CHUNK_SIZE, max_chunk_tokens(model_dir, 512))
    overlap = min(DEFAULT_OVERLAP, chunk_size // 4)
    data = Path(spec["pdf"]).read_bytes()
    started = time.perf_counter()
    prepared = prepare(spec["filename"], data, model_dir, chunk_size, overlap)
    prepare_s = time.perf_counter() - started
    texts = [chunk.text for chunk in prepared.chunks]
    progress.say(f"bash.pdf: {len(prepared.document.parts)} pages, {len(texts)} chunks in {prepare_s:.2f}s")

    started = time.perf_counter()
    handler = load(model_dir)
    handler.warmup()
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    vectors, chunk_tokens = handler.embed(texts)
    embed_s = time.perf_counter() - started
    progress.say(f"embedded {len(texts)} chunks in {embed_s:.2f}s ({len(texts) / embed_s:.1f} chunks/s)")

    reranker, reranker_info = load_reranker(spec.get("reranker_path") or "")
    if reranker is None:
        progress.say(f"rerank mode skipped: {reranker_info['skipped']}")
    rerankers = {"rerank": (reranker, reranker_info)} if reranker is not None else {}
    rerankers.update(load_platform_rerankers(spec))
    rerank_ms: list[float] = []

    def timed(rerank: Callable[[str, list[str]], list[float]]) -> Callable[[str, list[str]], list[float]]:
        def timed_rerank(query: str, passages: list[str]) -> list[float]:
            began = time.perf_counter()
            scores = rerank(query, passages)
            rerank_ms.append((time.perf_counter() - began) * 1000)
            return scores

        return timed_rerank

    with tempfile.TemporaryDirectory(prefix="mlxf-bench-rag-") as folder:
        store = LanceDBStore(folder)
        started = time.perf_counter()
        store.ensure_collection(COLLECTION, len(vectors[0]))
        store.upsert(COLLECTION, chunk_records(DOCUMENT_ID, prepared, vectors, {}))
        store_s = time.perf_counter() - started
        stored = store.count(COLLECTION)

        pool: list[Hit] = []

        def keep_pool(hits: list[Hit]) -> list[Hit]:
            """The hybrid candidates the reranker sees: the first ``pool_size`` of the fused ranking."""
            pool[:] = hits[:pool_size]
            return list(pool)

        def ask(question: str, vector: list[float], mode: str) -> tuple[list[Hit], float]:
            began = time.perf_counter()
            if mode in rerankers:
                ranked = retrieve(
                    store,
                    COLLECTION,
                    question,
                    vector,
                    top_k=top_k,
                    mode="hybrid",
                    rerank=timed(rerankers[mode][0]),
                    rerank_candidates=pool_size,
                    keep=keep_pool,
                )
            else:
                ranked = retrieve(store, COLLECTION, question, vector, top_k=top_k, mode=mode)
            return [item.hit for item in ranked], (time.perf_counter() - began) * 1000

        modes = ["vector", "hybrid", *rerankers]
        warm_vector = handler.embed(["How do I warm up?"])[0][0]
        text_hits = len(store.search_text(COLLECTION, "history expansion", top_k=top_k))
        for mode in modes:
            ask("How do I warm up?", warm_vector, mode)
        rerank_ms.clear()

        results = []
        for number, row in enumerate(questions, start=1):
            began = time.perf_counter()
            vector = handler.embed([row["question"]])[0][0]
            embed_ms = (time.perf_counter() - began) * 1000
            entry: dict[str, Any] = {"id": row["id"], "embed_ms": embed_ms, "modes": {}}
            for mode in modes:
                hits, ms = ask(row["question"], vector, mode)
                entry["modes"][mode] = {"ms": ms, "hits": [[hit.page, hit.chunk_index, hit.file] for hit in hits]}
                if mode in rerankers:
                    entry["pool"] = [[hit.page, hit.chunk_index, hit.file] for hit in pool]
                    entry.setdefault("rerank_ms", {})[mode] = rerank_ms[-1]
            results.append(entry)
            if number % 50 == 0 or number == len(questions) or (len(rerankers) > 1 and number % 10 == 0):
                progress.say(f"asked {number}/{len(questions)} questions")

        answers = _answers(spec, questions, handler, store, vector_of=lambda text: handler.embed([text])[0][0])

    pages = Counter(chunk.page for chunk in prepared.chunks)
    return {
        "chunk_size": chunk_size,
        "overlap": overlap,
        "pages": len(prepared.document.parts),
        "chunks": len(texts),
        "stored": stored,
        "chunk_tokens": chunk_tokens,
        "chunks_per_page": {str(page): count for page, count in sorted(pages.items())},
        "prepare_s": prepare_s,
        "model_load_s": load_s,
        "embed_s": embed_s,
        "store_s": store_s,
        "text_search_probe_hits": text_hits,
        "modes": modes,
        "reranker": reranker_info,
        "rerankers": {mode: info for mode, (_rerank, info) in rerankers.items()},
        "questions": results,
        "answers": answers,
    }


CONTENT_WORD = re.compile(r"[a-z][a-z0-9_]{3,}")
STOPWORDS = frozenset(
    "that this with from have will your which when what there their they them then than into also only such"
    " been were does used uses using each more most other some these those about would could should".split()
)
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
SUPPORTED_COSINE = 0.6


def _answers(spec: dict[str, Any], questions: list[dict], embedder: Any, store: Any, vector_of: Any) -> list[dict]:
    """Answers of the chat model to a sample of the questions from their top 5 hybrid sources (the platform's
    prompt, ``rag.answer.messages``), greedy, and how well each answer stays with its sources: the share of its
    content words found in them, the share of its sentences whose embedding is close (cosine >= 0.6) to a
    source's, and whether its [n] citations point at real sources."""
    from concurrent.futures import Future

    from models.batch import Ticket
    from models.handlers import load_handler
    from models.handlers.base import ServingLimits
    from rag.answer import messages
    from rag.retrieval import retrieve

    sample = [row for row in questions if row["id"] in set(spec.get("answer_ids") or [])]
    if not sample:
        return []
    chat = load_handler("lm", Path(spec["chat_model_dir"]), 4096, ServingLimits(max_sequences=8))
    tickets, contexts = [], []
    for row in sample:
        vector = vector_of(row["question"])
        hits = [item.hit for item in retrieve(store, COLLECTION, row["question"], vector, top_k=5, mode="hybrid")]
        sources = [{"text": hit.text, "metadata": {"file": hit.file, "page": hit.page}} for hit in hits]
        payload = {"messages": messages(row["question"], sources), "max_tokens": 64, "temperature": 0}
        tickets.append(Ticket("chat", payload, lambda _e: None, lambda: False, lambda: False, Future(), row["id"]))
        contexts.append(hits)
    began = time.perf_counter()
    for ticket in tickets:
        chat.batch.submit(ticket)
    while chat.batch.busy:
        chat.batch.step()
    generate_s = time.perf_counter() - began
    progress.say(f"answered {len(tickets)} questions in {generate_s:.1f}s")
    answers = []
    for row, ticket, hits in zip(sample, tickets, contexts, strict=True):
        text = ticket.future.result()["content"]
        source_text = " ".join(hit.text for hit in hits).lower()
        words = [w for w in CONTENT_WORD.findall(text.lower()) if w not in STOPWORDS]
        sentences = [s for s in SENTENCE.split(text) if len(s.split()) >= 3]
        source_vectors = embedder.embed([hit.text for hit in hits])[0] if hits else []
        supported = 0
        for sentence in sentences:
            vector = vector_of(sentence)
            best = max((sum(a * b for a, b in zip(vector, other, strict=True)) for other in source_vectors), default=0)
            supported += best >= SUPPORTED_COSINE
        cited = [int(n) for n in re.findall(r"\[(\d+)\]", text)]
        answers.append(
            {
                "id": row["id"],
                "answer": text,
                "pages": [hit.page for hit in hits],
                "grounded_words": (sum(w in source_text for w in words) / len(words)) if words else None,
                "supported_sentences": (supported / len(sentences)) if sentences else None,
                "citations": len(cited),
                "citations_valid": sum(1 <= n <= len(hits) for n in cited),
                "generate_s": generate_s / len(tickets),
            }
        )
    return answers
