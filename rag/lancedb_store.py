"""The embedded vector store: one LanceDB table per collection in a local folder.

Choices, from figures measured on these machines (100,000 chunks x 384 dims): a search without a
vector index is exact and takes about 150 ms at 100k rows (so about 75 ms at ``VECTOR_INDEX_MIN_ROWS`` = 50k);
``IVF_HNSW_SQ`` answers in 4-7 ms at recall@10 1.0 when queried with ``ef(100)`` and ``refine_factor(5)`` but
takes about a minute to build, and ``IVF_PQ`` without refinement reached recall 0.37. So collections stay exact
(recall 1.0, no build cost) below 50k chunks; at 50k an ingest builds IVF_HNSW_SQ once. Rows appended after the
index are searched unindexed until ``optimize()`` folds them in (0.5-1.2 s at 100k, measured by ``bench rag_scale``):
during an ingest when they reach a tenth of the table, and at its end (``settle``).
Readers in other processes see new rows only with ``read_consistency_interval``: zero checks on every read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
from lancedb.index import FTS, BTree, IvfHnswSq, LabelList

from rag.vectors import (
    ChunkRecord,
    CollectionNotFound,
    Hit,
    Scalar,
    check_collection_name,
    check_dimension,
    check_query,
    check_records,
    cosine,
    filter_terms,
    metadata_json,
    metadata_terms,
)

VECTOR_INDEX_MIN_ROWS = 50_000
UNINDEXED_FRACTION_TO_OPTIMIZE = 0.1
SEARCH_EF = 100
SEARCH_REFINE_FACTOR = 5
INDEX_CACHE_BYTES = 512 * 2**20
METADATA_CACHE_BYTES = 128 * 2**20
"""LanceDB's caches of index and table metadata pages, per process: its defaults (6 GiB and 1 GiB) let an idle
control worker keep growing with every ingest; 512 MiB is several times the 100,000-chunk benchmark's index (its 8-bit
vectors are about 40 MB)."""
_VECTOR_INDEX = "vector_idx"
_COLUMNS = ["chunk_id", "text", "document_id", "file", "page", "chunk_index", "metadata"]


def _schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("chunk_id", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("document_id", pa.string(), nullable=False),
            pa.field("file", pa.string(), nullable=False),
            pa.field("page", pa.int32(), nullable=True),
            pa.field("chunk_index", pa.int32(), nullable=False),
            pa.field("metadata", pa.string(), nullable=False),
            pa.field("metadata_terms", pa.list_(pa.string()), nullable=False),
        ]
    )


class LanceDBStore:
    """``VectorStore`` on LanceDB tables under ``path``; cosine distance, scores as similarity."""

    def __init__(self, path: Path | str, *, vector_index_min_rows: int = VECTOR_INDEX_MIN_ROWS) -> None:
        self.path = Path(path)
        self.vector_index_min_rows = vector_index_min_rows
        self._db: lancedb.DBConnection | None = None

    @property
    def db(self) -> lancedb.DBConnection:
        if self._db is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = lancedb.connect(
                self.path,
                read_consistency_interval=timedelta(0),
                session=lancedb.Session(
                    index_cache_size_bytes=INDEX_CACHE_BYTES, metadata_cache_size_bytes=METADATA_CACHE_BYTES
                ),
            )
        return self._db

    def ensure_collection(self, name: str, dimension: int) -> None:
        check_collection_name(name)
        check_dimension(name, dimension)
        try:
            table = self.db.create_table(name, schema=_schema(dimension), exist_ok=True)
        except ValueError:
            table = self.db.open_table(name)
        check_dimension(name, dimension, _dimension(table))
        indexed = {index.name for index in table.list_indices()}
        if "text_idx" not in indexed:
            table.create_index("text", config=FTS(), name="text_idx")
        if "chunk_id_idx" not in indexed:
            table.create_index("chunk_id", config=BTree(), name="chunk_id_idx")
        if "document_id_idx" not in indexed:
            table.create_index("document_id", config=BTree(), name="document_id_idx")
        if "metadata_terms_idx" not in indexed:
            table.create_index("metadata_terms", config=LabelList(), name="metadata_terms_idx")

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> int:
        table = self._table(collection)
        if not records:
            return 0
        check_records(records, _dimension(table))
        rows = pa.Table.from_pylist([_row(record) for record in records], schema=table.schema)
        table.merge_insert("chunk_id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
        self._maintain_indices(table)
        return len(records)

    def search(
        self,
        collection: str,
        vector: Sequence[float],
        *,
        top_k: int = 5,
        threshold: float | None = None,
        filters: Mapping[str, Scalar] | None = None,
        document_ids: Sequence[str] | None = None,
    ) -> list[Hit]:
        table = self._table(collection)
        check_query(vector, _dimension(table))
        query = table.search(list(map(float, vector)), vector_column_name="vector").distance_type("cosine")
        query = query.ef(SEARCH_EF).refine_factor(SEARCH_REFINE_FACTOR).select([*_COLUMNS, "_distance"]).limit(top_k)
        where = _where(filters, document_ids)
        if where:
            query = query.where(where, prefilter=True)
        hits = [_hit(row, 1.0 - row["_distance"]) for row in query.to_list()]
        return [hit for hit in hits if threshold is None or hit.score >= threshold]

    def search_text(
        self,
        collection: str,
        query: str,
        *,
        top_k: int = 5,
        filters: Mapping[str, Scalar] | None = None,
        document_ids: Sequence[str] | None = None,
        vector: Sequence[float] | None = None,
    ) -> list[Hit]:
        table = self._table(collection)
        if vector is not None:
            check_query(vector, _dimension(table))
        if not query.strip():
            return []
        columns = [*_COLUMNS, "_score", *(["vector"] if vector is not None else [])]
        search = table.search(query, query_type="fts", fts_columns="text").select(columns).limit(top_k)
        where = _where(filters, document_ids)
        if where:
            search = search.where(where, prefilter=True)
        rows = search.to_list()
        if vector is None:
            return [_hit(row, row["_score"]) for row in rows]
        return [_hit(row, cosine(vector, row["vector"])) for row in rows]

    def ping(self) -> bool:
        try:
            self.list_collections()
        except Exception:  # noqa: BLE001 - any failure to read the folder means the store cannot serve
            return False
        return True

    def settle(self, collection: str) -> None:
        """Folds rows appended since the vector index was built into it: each 1,000 unindexed rows add about
        0.6-0.9 ms to a search's p95 at 100k rows, and nothing else would index them until the next ingest."""
        table = self._table(collection)
        if _VECTOR_INDEX not in {index.name for index in table.list_indices()}:
            return
        stats = table.index_stats(_VECTOR_INDEX)
        if stats is not None and stats.num_unindexed_rows:
            table.optimize()

    def delete_document(self, collection: str, document_id: str) -> int:
        table = self._table(collection)
        return table.delete(f"document_id = {_quote(document_id)}").num_deleted_rows

    def drop_collection(self, name: str) -> int:
        check_collection_name(name)
        if name not in self.list_collections():
            return 0
        chunks = self.db.open_table(name).count_rows()
        self.db.drop_table(name, ignore_missing=True)
        return chunks

    def count(self, collection: str, document_id: str | None = None) -> int:
        check_collection_name(collection)
        if collection not in self.list_collections():
            return 0
        table = self.db.open_table(collection)
        return table.count_rows(None if document_id is None else f"document_id = {_quote(document_id)}")

    def list_collections(self) -> list[str]:
        names: list[str] = []
        page_token = None
        while True:
            response = self.db.list_tables(page_token=page_token)
            names.extend(response.tables)
            page_token = response.page_token
            if not page_token:
                return sorted(names)

    def _table(self, name: str) -> lancedb.table.Table:
        check_collection_name(name)
        try:
            return self.db.open_table(name)
        except (FileNotFoundError, ValueError):
            raise CollectionNotFound(name) from None

    def _maintain_indices(self, table: lancedb.table.Table) -> None:
        """Build the vector index once the table is big enough; fold appended rows into the indices."""
        rows = table.count_rows()
        if _VECTOR_INDEX not in {index.name for index in table.list_indices()}:
            if rows >= self.vector_index_min_rows:
                table.create_index("vector", config=IvfHnswSq(distance_type="cosine"), name=_VECTOR_INDEX)
                table.optimize()
            return
        stats = table.index_stats(_VECTOR_INDEX)
        if stats is not None and stats.num_unindexed_rows >= rows * UNINDEXED_FRACTION_TO_OPTIMIZE:
            table.optimize()


def _dimension(table: lancedb.table.Table) -> int:
    return table.schema.field("vector").type.list_size


def _row(record: ChunkRecord) -> dict[str, Any]:
    return {
        "chunk_id": record.chunk_id,
        "vector": [float(value) for value in record.vector],
        "text": record.text,
        "document_id": record.document_id,
        "file": record.file,
        "page": record.page,
        "chunk_index": record.chunk_index,
        "metadata": metadata_json(record.metadata),
        "metadata_terms": metadata_terms(record.metadata),
    }


def _hit(row: Mapping[str, Any], score: float) -> Hit:
    return Hit(
        chunk_id=row["chunk_id"],
        text=row["text"],
        score=float(score),
        document_id=row["document_id"],
        file=row["file"],
        page=row["page"],
        chunk_index=row["chunk_index"],
        metadata=json.loads(row["metadata"]),
    )


def _where(filters: Mapping[str, Scalar] | None, document_ids: Sequence[str] | None) -> str:
    clauses = []
    terms = filter_terms(filters)
    if terms:
        clauses.append(f"array_has_all(metadata_terms, [{', '.join(map(_quote, terms))}])")
    if document_ids is not None:
        if not document_ids:
            clauses.append("false")
        else:
            clauses.append(f"document_id IN ({', '.join(map(_quote, document_ids))})")
    return " AND ".join(clauses)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
