"""Section 7: retrieval quality on judged questions about bash.pdf, in-process with the platform's own RAG code.

bash.pdf is ingested as the platform ingests it (``rag.ingest.prepare`` with the embedding model's chunking
defaults, the worker's embeddings handler, a ``LanceDBStore`` in a temporary folder); each question of
``bench/data/rag_questions.jsonl`` is embedded and answered by ``rag.retrieval.retrieve`` in vector mode, hybrid
mode, and hybrid with the first candidates reranked by nanoranker (when importable; it is not a project
dependency). A hit is relevant when its page is one the question lists (``bench/data/README.md``).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.context import BenchContext
from bench.defaults import (
    CHAT_MODEL,
    CHAT_MODEL_DIR,
    DATA_DIR,
    EMBEDDING_MODEL,
    EMBEDDING_MODEL_DIR,
    RERANK_MODEL_DIR,
)
from bench.inprocess import run_probe
from bench.report import SectionResult, Table
from bench.stats import percentile

NAME = "rag_quality"
TITLE = "RAG retrieval quality"
QUESTIONS_PATH = Path(__file__).resolve().parent / "data" / "rag_questions.jsonl"
BASH_PDF = DATA_DIR / "documents" / "bash-doc" / "usr" / "share" / "doc" / "bash" / "bash.pdf"
FILENAME = "bash.pdf"
KINDS = ("all", "lexical", "paraphrase")
MODE_LABELS = {
    "vector": "vector",
    "hybrid": "hybrid (vector + BM25, RRF)",
    "rerank": "hybrid → nanoranker",
    "rerank_chat": "hybrid → SmolLM2 P(yes) (/v1/rerank, chat model)",
    "rerank_cross": "hybrid → ms-marco MiniLM, RANDOM weights (/v1/rerank, rerank model)",
}
RERANK_MODES = ("rerank", "rerank_chat", "rerank_cross")
BOOTSTRAP_SAMPLES = 2000


def load_questions(path: Path = QUESTIONS_PATH) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spread(questions: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """``count`` questions evenly spread over the set (which is in page order), or all when ``count`` is 0."""
    if not count or count >= len(questions):
        return questions
    return [questions[index * len(questions) // count] for index in range(count)]


def relevant(hit: Sequence[Any], pages: Sequence[int]) -> bool:
    """``hit`` is ``[page, chunk_index, file]``: relevant when it is a chunk of bash.pdf on a judged page."""
    return hit[2] == FILENAME and hit[0] in pages


def score(hits: list[Sequence[Any]], pages: Sequence[int], available: int, top_k: int) -> dict[str, float]:
    """Rank metrics of one ranking: hit@1/5/k (any relevant chunk in the first k), reciprocal rank of the first
    relevant chunk within k, and nDCG@k with binary relevance per chunk, the ideal being ``available`` relevant
    chunks (those of the judged pages in the collection, at most k) at the top."""
    flags = [relevant(hit, pages) for hit in hits[:top_k]]
    first = next((rank for rank, flag in enumerate(flags, start=1) if flag), None)
    dcg = sum(1 / math.log2(rank + 1) for rank, flag in enumerate(flags, start=1) if flag)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(available, top_k) + 1))
    return {
        "hit@1": float(any(flags[:1])),
        "hit@5": float(any(flags[:5])),
        f"hit@{top_k}": float(any(flags)),
        f"mrr@{top_k}": 1 / first if first else 0.0,
        f"ndcg@{top_k}": dcg / ideal if ideal else 0.0,
    }


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign test (McNemar's exact test) of ``wins`` against ``losses`` discordant questions."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_ci(differences: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 7) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of paired ``differences`` (fixed seed)."""
    rng = random.Random(seed)
    n = len(differences)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(samples))
    return means[int(0.025 * samples)], means[int(0.975 * samples) - 1]


def fmt(value: float | None, digits: int = 3) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def scored_questions(probe: dict[str, Any], questions: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """Per question: its kind, and per mode its metrics (plus hit@pool for the reranker's candidates)."""
    per_page = {int(page): count for page, count in probe["chunks_per_page"].items()}
    by_id = {row["id"]: row for row in questions}
    scored = []
    for entry in probe["questions"]:
        row = by_id[entry["id"]]
        available = sum(per_page.get(page, 0) for page in row["pages"])
        item: dict[str, Any] = {"id": row["id"], "kind": row["kind"], "modes": {}}
        for mode, found in entry["modes"].items():
            item["modes"][mode] = score(found["hits"], row["pages"], available, top_k)
        if "pool" in entry:
            item["pool_hit"] = float(any(relevant(hit, row["pages"]) for hit in entry["pool"]))
        scored.append(item)
    return scored


def compact(entry: dict[str, Any], kind: str) -> dict[str, Any]:
    """One question's rankings as ``"page:chunk_index"`` strings (all hits are of bash.pdf) and its times in ms."""

    def ranking(hits: list[Sequence[Any]]) -> str:
        return " ".join(f"{hit[0]}:{hit[1]}" for hit in hits)

    return {
        "id": entry["id"],
        "kind": kind,
        "ranked": {mode: ranking(found["hits"]) for mode, found in entry["modes"].items()},
        "pool": ranking(entry["pool"]) if "pool" in entry else None,
        "ms": {
            "embed": entry["embed_ms"],
            **{mode: found["ms"] for mode, found in entry["modes"].items()},
            **(entry.get("rerank_ms") or {}),
        },
    }


def of_kind(scored: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in scored if kind == "all" or item["kind"] == kind]


def run(context: BenchContext) -> SectionResult:
    """Hit rates, MRR and nDCG per mode and kind of question, paired comparisons with vector, and timings."""
    options = context.options
    result = SectionResult(NAME, TITLE)
    needed = ((BASH_PDF, "run `make documents`"), (EMBEDDING_MODEL_DIR / "tokenizer.json", "run `make models`"))
    for path, how in needed:
        if not path.exists():
            result.skipped = f"{path} is missing: {how}"
            return result
    top_k = options.rag_top_k
    questions = spread(load_questions(), options.rag_questions)
    spec = {
        "pdf": str(BASH_PDF),
        "filename": FILENAME,
        "model_dir": str(EMBEDDING_MODEL_DIR),
        "questions_path": str(QUESTIONS_PATH),
        "ids": [row["id"] for row in questions],
        "top_k": top_k,
        "rerank_candidates": options.rag_rerank_candidates,
        "reranker_path": options.rag_reranker_path,
        "rerankers": options.rag_rerankers,
        "cross_encoder_dir": str(RERANK_MODEL_DIR),
        "chat_model_dir": str(CHAT_MODEL_DIR),
        "answer_ids": [row["id"] for row in spread(questions, options.rag_answers)] if options.rag_answers else [],
    }
    probe = run_probe("rag_quality", spec, openblas=True)
    scored = scored_questions(probe, questions, top_k)
    modes = probe["modes"]
    reranker = probe["reranker"]
    metrics = ["hit@1", "hit@5", f"hit@{top_k}", f"mrr@{top_k}", f"ndcg@{top_k}"]
    counts = {kind: len(of_kind(scored, kind)) for kind in KINDS}

    quality = Table(
        f"{len(scored)} questions on bash.pdf ({counts['lexical']} lexical, {counts['paraphrase']} paraphrase), "
        f"{EMBEDDING_MODEL}, top {top_k}; hit@k = recall@k as hit rate",
        ["mode", "questions", "n", *metrics],
    )
    summary: dict[str, dict[str, dict[str, float | None]]] = {}
    for mode in ("vector", "hybrid", *RERANK_MODES):
        if mode not in modes and mode != "rerank":
            continue  # the platform's rerankers not asked for (--rerankers)
        summary[mode] = {}
        for kind in KINDS:
            items = of_kind(scored, kind)
            if mode not in modes:
                skipped = f"skipped: {reranker['skipped']}"
                quality.rows.append([MODE_LABELS[mode], kind, len(items), skipped, *[None] * (len(metrics) - 1)])
                continue
            values = {metric: mean([item["modes"][mode][metric] for item in items]) for metric in metrics}
            summary[mode][kind] = values
            quality.rows.append([MODE_LABELS[mode], kind, len(items), *[fmt(values[m]) for m in metrics]])
    result.tables.append(quality)

    paired = Table(
        "Against vector alone, same questions (paired)",
        [
            "mode",
            "questions",
            f"hit@{top_k}: found only by mode / only by vector",
            "sign test p",
            f"MRR@{top_k} difference [95% CI]",
            f"nDCG@{top_k} difference [95% CI]",
        ],
    )
    comparisons: dict[str, dict[str, Any]] = {}
    for mode in modes:
        if mode == "vector":
            continue
        comparisons[mode] = {}
        for kind in KINDS:
            items = of_kind(scored, kind)
            hit = f"hit@{top_k}"
            wins = sum(1 for i in items if i["modes"][mode][hit] > i["modes"]["vector"][hit])
            losses = sum(1 for i in items if i["modes"][mode][hit] < i["modes"]["vector"][hit])
            row: dict[str, Any] = {"wins": wins, "losses": losses, "p": sign_test(wins, losses)}
            cells = [MODE_LABELS[mode], kind, f"{wins} / {losses}", "<0.001" if row["p"] < 0.001 else fmt(row["p"])]
            for metric in (f"mrr@{top_k}", f"ndcg@{top_k}"):
                diffs = [i["modes"][mode][metric] - i["modes"]["vector"][metric] for i in items]
                low, high = bootstrap_ci(diffs)
                row[metric] = {"mean": mean(diffs), "ci95": [low, high]}
                cells.append(f"{mean(diffs):+.3f} [{low:+.3f}, {high:+.3f}]")
            comparisons[mode][kind] = row
            paired.rows.append(cells)
    result.tables.append(paired)

    per_question = probe["questions"]
    embed_ms = [entry["embed_ms"] for entry in per_question]
    timings = Table(
        "Timings (in-process, OpenBLAS, one query at a time)",
        ["step", "items", "total s", "items/s", "p50 ms", "p95 ms"],
    )
    chunks = probe["chunks"]
    timings.rows += [
        ["extract + chunk (rag.ingest.prepare)", f"{chunks} chunks", probe["prepare_s"], chunks / probe["prepare_s"]]
        + [None, None],
        ["embed chunks (handler.embed, batches of 32)", f"{chunks} chunks", probe["embed_s"], chunks / probe["embed_s"]]
        + [None, None],
        ["store (LanceDB upsert)", f"{chunks} chunks", probe["store_s"], chunks / probe["store_s"], None, None],
        ["embed query", f"{len(embed_ms)} queries", None, None, percentile(embed_ms, 50), percentile(embed_ms, 95)],
    ]
    for mode in modes:
        ms = [entry["modes"][mode]["ms"] for entry in per_question]
        label = f"retrieve: {MODE_LABELS[mode]}" + (" (incl. rerank)" if mode in RERANK_MODES else "")
        timings.rows.append([label, f"{len(ms)} queries", None, None, percentile(ms, 50), percentile(ms, 95)])
    for mode in (m for m in RERANK_MODES if m in modes):
        ms = [entry["rerank_ms"][mode] for entry in per_question]
        timings.rows.append(
            [
                f"{MODE_LABELS[mode].split('→ ')[1]} over {options.rag_rerank_candidates} passages",
                f"{len(ms)} queries",
                None,
                None,
                percentile(ms, 50),
                percentile(ms, 95),
            ]
        )
    result.tables.append(timings)

    answers = probe.get("answers") or []
    if answers:
        result.tables.append(faithfulness_table(answers))
    result.notes += [
        f"bash.pdf: {probe['pages']} pages, {chunks} chunks of at most {probe['chunk_size']} tokens with "
        f"{probe['overlap']} overlap (the platform's defaults for {EMBEDDING_MODEL}); a chunk is relevant when its "
        "page is one the question lists (bench/data/README.md)",
        f"hit@k: share of questions with at least one relevant chunk in the first k (what the brief calls "
        f"recall@k); MRR@{top_k}: 1/rank of the first relevant chunk, 0 when none in the first {top_k}; "
        f"nDCG@{top_k}: binary relevance per chunk, ideal = all chunks of the judged pages (at most {top_k}) first",
        "hybrid: rag.retrieval.retrieve mode 'hybrid' (40 vector + 40 BM25 candidates fused by reciprocal rank); "
        f"rerank: the first {options.rag_rerank_candidates} of the same fused list rescored by "
        "nanoranker.rank(normalize_scores=False) (or by the platform's rerankers: the chat model's P(yes), the "
        "catalog's random-weight cross-encoder), through retrieve(rerank=...)",
        "paired table: questions found in the top k by one mode and not the other, the exact sign test on them, "
        f"and the mean per-question difference with a {BOOTSTRAP_SAMPLES}-sample bootstrap interval",
    ]
    if any(mode in modes for mode in RERANK_MODES):
        pool = mean([item["pool_hit"] for item in scored])
        result.notes.append(
            f"the {options.rag_rerank_candidates} candidates every reranker sees hold a relevant chunk for {pool:.1%} "
            "of the questions (the ceiling of a reranker's hit rate)"
        )
    if "rerank_cross" in modes:
        result.notes.append(
            "the cross-encoder has RANDOM weights (no trained one can be installed here): its row measures the "
            "rerank path's cost and shows what noise does to the order, not what a trained reranker would do"
        )
    if "rerank" in modes:
        result.notes.append(
            f"nanoranker {reranker['version']} from {reranker['module']} (a test install, not a project dependency); "
            f"its {options.rag_rerank_candidates} candidates hold a relevant chunk for {pool:.1%} of the questions "
            "(the ceiling of its hit rate)"
        )
    else:
        result.notes.append(f"rerank mode skipped: {reranker['skipped']}")
    if not probe["text_search_probe_hits"]:
        result.notes.append("warning: a full-text probe query found nothing, so hybrid is vector alone here")
    result.raw = {
        "questions": len(scored),
        "kinds": counts,
        "chunk_size": probe["chunk_size"],
        "overlap": probe["overlap"],
        "chunks": chunks,
        "stored": probe["stored"],
        "chunks_per_page": probe["chunks_per_page"],
        "summary": summary,
        "paired_vs_vector": comparisons,
        "reranker": reranker,
        "rerankers": probe.get("rerankers", {}),
        "timings_s": {key: probe[key] for key in ("prepare_s", "model_load_s", "embed_s", "store_s")},
        "per_question": [compact(entry, item["kind"]) for item, entry in zip(scored, per_question, strict=True)],
        "answers": answers,
    }
    return result


def faithfulness_table(answers: list[dict[str, Any]]) -> Table:
    """Proxies of faithfulness (no judge model can run here): words and sentences of each answer found in, or
    close to, its sources, and citations that point at a source."""

    def share(key: str) -> float | None:
        values = [a[key] for a in answers if a[key] is not None]
        return mean(values) if values else None

    cited = [a for a in answers if a["citations"]]
    table = Table(
        f"Answers from their sources ({CHAT_MODEL}, {len(answers)} questions, top 5 hybrid sources, greedy, 64 tokens)",
        ["measure", "value"],
    )
    table.rows += [
        ["content words of the answer found in its sources", share("grounded_words")],
        ["answer sentences close to a source (MiniLM cosine >= 0.6)", share("supported_sentences")],
        ["answers citing a source [n]", len(cited) / len(answers)],
        [
            "citations that point at a given source",
            (sum(a["citations_valid"] for a in cited) / sum(a["citations"] for a in cited)) if cited else None,
        ],
        ["generation s per answer (batched)", answers[0]["generate_s"]],
    ]
    return table
