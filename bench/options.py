"""How much each section measures: the full run, or ``--quick`` for a smoke run of a few tokens."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class Options:
    """Sizes of every section; ``quick`` shrinks them all so a run takes a few minutes."""

    quick: bool = False
    weights_formats: list[str] = field(default_factory=lambda: ["q4", "q8", "float16", "float32"])
    weights_tokens: int = 64
    weights_runs: int = 2
    fact_tokens: int = 24
    overhead_tokens: int = 128
    overhead_runs: int = 5
    overhead_warmup_runs: int = 1
    levels: list[int] = field(default_factory=lambda: [1, 4, 8, 16, 32])
    servers: list[str] = field(default_factory=lambda: ["platform", "platform-2-workers", "mlx-lm", "llama-cpp"])
    concurrency_tokens: int = 64
    requests_per_client: int = 2
    lifecycle_runs: int = 3
    jobs: int = 100
    job_submitters: int = 4
    embedding_texts: int = 256
    embedding_batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    embedding_runs: int = 3
    media_runs: int = 3
    rag_questions: int = 0
    """rag_quality: how many judged questions (spread over the set); 0 for all of them."""
    rag_top_k: int = 10
    rag_answers: int = 20
    """rag_quality: questions the chat model answers from their sources, for the faithfulness proxies."""
    rag_rerank_candidates: int = 20
    rag_rerankers: list[str] = field(default_factory=lambda: ["chat", "cross-encoder"])
    """rag_quality: the platform's rerankers to measure beside nanoranker: ``chat`` (the chat model's P(yes),
    about 1 s a question per 10 candidates here) and ``cross-encoder`` (the catalog's random-weight one)."""
    rag_reranker_path: str = field(default_factory=lambda: os.environ.get("MLXF_BENCH_RERANKER_PATH", ""))
    """rag_quality: a folder appended to sys.path to import nanoranker from (a test install; not a dependency)."""
    rag_scale_chunks: int = 100_000
    """rag_scale: chunks in the collection (before the appended ones)."""
    rag_scale_queries: int = 500
    rag_scale_chunk_size: int = 32
    """rag_scale: short chunks, so the two documentation packages make well over 100,000 of them."""
    rag_scale_overlap: int = 0
    rag_scale_appends: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.09])
    """rag_scale: rows appended after the index, as fractions of the collection (below the 10 % optimize)."""
    rag_scale_index_min_rows: int = 0
    """rag_scale: rows at which the store builds its vector index; 0 for the store's own VECTOR_INDEX_MIN_ROWS."""
    chaos_minutes: float = 10.0
    """chaos: how long faults come."""
    batch_lines: int = 1000
    """batch: requests sent by the streaming clients and, the same ones, as one batch."""
    batch_ttft_lines: int = 2000
    """batch: lines of the batch that runs beside the interactive clients."""
    batch_tokens: int = 64
    batch_clients: int = 32
    interactive_clients: int = 8
    interactive_requests: int = 4
    """batch: requests each interactive client sends, one after the other."""
    rag_scale_exact_lancedb: bool = True
    """rag_scale: also search without the index (``bypass_vector_index``), about 45 ms a query at 100k (measured)."""

    @classmethod
    def smoke(cls) -> Options:
        """Just enough to see every code path work: few tokens, one run, concurrency 1 and 2."""
        return cls(
            quick=True,
            weights_tokens=8,
            weights_runs=1,
            fact_tokens=12,
            overhead_tokens=8,
            overhead_runs=2,
            levels=[1, 2],
            concurrency_tokens=8,
            requests_per_client=1,
            lifecycle_runs=1,
            jobs=5,
            job_submitters=2,
            embedding_texts=16,
            embedding_batch_sizes=[1, 16],
            embedding_runs=1,
            media_runs=1,
            rag_questions=40,
            rag_answers=4,
            rag_scale_chunks=5_000,
            chaos_minutes=1.0,
            rag_scale_queries=100,
            rag_scale_index_min_rows=2_500,
            batch_lines=32,
            batch_ttft_lines=64,
            batch_tokens=8,
            interactive_requests=1,
        )
