"""Retrieval over a vector store: vector search, hybrid search (vector and full-text ranks fused) and reranking.

Every hit's ``score`` is its cosine similarity to the query embedding, in every
mode, so that ``similarity_threshold`` means the same thing whichever ranking
is used; the ranking itself comes from the mode (and from the reranker's scores
when one is given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rag.vectors import Hit, Scalar, VectorStore

MODES = ("vector", "hybrid")
RRF_K = 60
"""Reciprocal rank fusion's constant (Cormack et al. 2009): a hit at rank r in a list adds 1 / (RRF_K + r)."""
MIN_CANDIDATES = 20
"""Hybrid search and reranking look at least this many candidates from each list before cutting to top_k."""

Rerank = Callable[[str, list[str]], list[float]]
"""Relevance of each passage to the query, higher is more relevant (a cross-encoder's logits, for example)."""


@dataclass(frozen=True)
class Ranked:
    hit: Hit
    rerank_score: float | None = None


MAX_CANDIDATES = 10_000
"""The most candidates one query looks at while ``keep`` (chunks of ready documents) drops what it fetched."""


def candidates_for(top_k: int) -> int:
    return max(MIN_CANDIDATES, 4 * top_k)


def fuse(*rankings: Sequence[Hit], k: int = RRF_K) -> list[Hit]:
    """The hits of every ranking, ordered by reciprocal rank fusion (ties keep first-seen order)."""
    fused: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            fused[hit.chunk_id] = fused.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
            first.setdefault(hit.chunk_id, hit)
    order = sorted(first, key=lambda chunk_id: -fused[chunk_id])
    return [first[chunk_id] for chunk_id in order]


def retrieve(
    store: VectorStore,
    collection: str,
    query: str,
    vector: Sequence[float],
    *,
    top_k: int,
    threshold: float | None = None,
    filters: Mapping[str, Scalar] | None = None,
    mode: str = "vector",
    rerank: Rerank | None = None,
    rerank_candidates: int | None = None,
    keep: Callable[[list[Hit]], list[Hit]] | None = None,
) -> list[Ranked]:
    """The ``top_k`` best chunks for ``query`` (embedded as ``vector``), best first.

    ``keep`` filters candidates before the cut (the service keeps chunks of ready documents only); when it
    leaves too few, more candidates are fetched (four times as many each round) until enough are kept, the
    collection has no more, or ``MAX_CANDIDATES`` were looked at. Chunks below ``threshold`` cosine similarity
    are dropped in every mode. With ``rerank``, the first ``rerank_candidates`` of the mode's ranking (at least
    ``top_k``; by default ``candidates_for(top_k)``) are reordered by the reranker's scores.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)} (got {mode!r})")
    needed = candidates_for(top_k) if mode == "hybrid" else top_k
    if rerank is not None:
        needed = max(needed, top_k, rerank_candidates or candidates_for(top_k))
    wanted = needed
    while True:
        hits = store.search(collection, vector, top_k=wanted, threshold=threshold, filters=filters)
        exhausted = len(hits) < wanted
        if mode == "hybrid":
            words = store.search_text(collection, query, top_k=wanted, filters=filters, vector=vector)
            exhausted = exhausted and len(words) < wanted
            hits = fuse(hits, [hit for hit in words if threshold is None or hit.score >= threshold])
        if keep is not None:
            hits = keep(hits)
        if keep is None or len(hits) >= needed or exhausted or wanted >= MAX_CANDIDATES:
            break
        wanted = min(4 * wanted, MAX_CANDIDATES)
    if rerank is None:
        return [Ranked(hit) for hit in hits[:top_k]]
    hits = hits[: max(top_k, rerank_candidates or candidates_for(top_k))]
    scores = rerank(query, [hit.text for hit in hits]) if hits else []
    ranked = sorted(
        (Ranked(hit, float(score)) for hit, score in zip(hits, scores, strict=True)),
        key=lambda item: -(item.rerank_score or 0.0),
    )
    return ranked[:top_k]
