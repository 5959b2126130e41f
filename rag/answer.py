"""The chat messages that ask a model to answer from retrieved chunks, citing them by number."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

INSTRUCTIONS = (
    "Answer the question using only the numbered sources below. Cite the sources you use as [1], [2], ... "
    "If the sources do not answer the question, say that they do not."
)


def source_label(number: int, source: Mapping[str, Any]) -> str:
    """``[n] (file, page p)`` for a source as the query API returns it (``metadata`` with ``file`` and ``page``)."""
    metadata = source.get("metadata") or {}
    where = metadata.get("file") or "unknown file"
    if metadata.get("page") is not None:
        where = f"{where}, page {metadata['page']}"
    return f"[{number}] ({where})"


def numbered_sources(sources: Sequence[Mapping[str, Any]] | None) -> str:
    """Each source as ``[n] (file, page p)`` and its text, or a line saying none matched."""
    if not sources:
        return "(no source matched the question)"
    return "\n\n".join(f"{source_label(n, s)}\n{s['text']}" for n, s in enumerate(sources, start=1))


def messages(query: str, sources: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A system message with the instructions and the numbered sources, then the question."""
    context = numbered_sources(sources)
    return [
        {"role": "system", "content": f"{INSTRUCTIONS}\n\nSources:\n\n{context}"},
        {"role": "user", "content": query},
    ]


def query_metadata(request: Mapping[str, Any], embedding_model: str, rerank_model: str | None = None) -> dict[str, Any]:
    """The ``metadata`` of a RAG answer: what the query asked for and which models served it."""
    retrieval = request["retrieval"]
    return {
        "collection": retrieval["collection"],
        "top_k": retrieval["top_k"],
        "model_id": request["model_id"],
        "embedding_model": embedding_model,
        "retrieval_mode": retrieval["mode"],
        "rerank": retrieval["rerank"],
        "rerank_model": rerank_model,
        "similarity_threshold": retrieval["similarity_threshold"],
    }
