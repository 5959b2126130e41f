"""The vector-store interface every store implements, the records it keeps and the checks the stores share."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class ChunkRecord:
    """A chunk to store: its vector, its text, where it came from and the document's metadata (JSON-able)."""

    chunk_id: str
    vector: Sequence[float]
    text: str
    document_id: str
    file: str
    page: int | None
    chunk_index: int
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """A chunk found by a search; ``score`` is cosine similarity in [-1, 1] for vector search (higher is
    nearer), a BM25 score for full-text search."""

    chunk_id: str
    text: str
    score: float
    document_id: str
    file: str
    page: int | None
    chunk_index: int
    metadata: dict[str, Any]


class VectorStore(Protocol):
    """Collections of chunks searched by cosine similarity and by words."""

    def ensure_collection(self, name: str, dimension: int) -> None:
        """Create the collection unless it exists; ``ValueError`` when it exists with another dimension."""

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> int:
        """Insert the records, replacing those with the same ``chunk_id``; returns how many were written."""

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
        """The ``top_k`` chunks nearest ``vector``, best first, with similarity at least ``threshold``,
        whose metadata equals every value of ``filters`` and whose document is one of ``document_ids``."""

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
        """The ``top_k`` chunks best matching the words of ``query`` (BM25), best first; each hit's score is
        its BM25 score, or its cosine similarity to ``vector`` when one is given (what hybrid search fuses)."""

    def ping(self) -> bool:
        """Whether the store answers (its folder opens, its server is ready)."""

    def settle(self, collection: str) -> None:
        """Make every chunk written so far searchable at full speed (a store that indexes in the background folds
        new rows into its index); called at the end of each ingest."""

    def delete_document(self, collection: str, document_id: str) -> int:
        """Remove a document's chunks; returns how many were removed."""

    def drop_collection(self, name: str) -> int:
        """Remove a collection and its chunks; returns how many chunks it held (0 when it did not exist)."""

    def count(self, collection: str, document_id: str | None = None) -> int:
        """Chunks in the collection, or of one document in it; 0 for a collection that does not exist."""

    def list_collections(self) -> list[str]:
        """Names of the collections, sorted."""


class CollectionNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name


def check_collection_name(name: str) -> str:
    """``name`` when it is 1-63 letters, digits, '_' or '-' starting with a letter or digit, else ``ValueError``."""
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise ValueError(
            f"collection name {name!r} must be 1-63 letters, digits, '_' or '-', starting with a letter or digit"
        )
    return name


def check_dimension(name: str, dimension: int, existing: int | None = None) -> None:
    """``ValueError`` for a dimension that is not positive, or that differs from the collection's ``existing`` one."""
    if dimension < 1:
        raise ValueError(f"dimension must be positive (got {dimension})")
    if existing is not None and existing != dimension:
        raise ValueError(f"collection {name!r} holds {existing}-dimensional vectors, not {dimension}")


def check_query(vector: Sequence[float], dimension: int) -> None:
    if len(vector) != dimension:
        raise ValueError(f"query vector has {len(vector)} dimensions, the collection {dimension}")


def check_records(records: Sequence[ChunkRecord], dimension: int) -> None:
    """``ValueError`` for a vector of another dimension, a repeated ``chunk_id`` or metadata that is not JSON."""
    seen: set[str] = set()
    for record in records:
        if len(record.vector) != dimension:
            raise ValueError(
                f"chunk {record.chunk_id!r} has {len(record.vector)} dimensions, the collection {dimension}"
            )
        if record.chunk_id in seen:
            raise ValueError(f"chunk id {record.chunk_id!r} appears twice in one upsert")
        seen.add(record.chunk_id)
        metadata_json(record.metadata)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    left, right = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = float(np.linalg.norm(left) * np.linalg.norm(right))
    return float(left @ right / norms) if norms else 0.0


def metadata_json(metadata: Mapping[str, Any]) -> str:
    try:
        return json.dumps(dict(metadata), sort_keys=True, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-able ({exc})") from None


def metadata_terms(metadata: Mapping[str, Any]) -> list[str]:
    """One ``key=<JSON value>`` term per top-level scalar of ``metadata``: what equality filters match."""
    return [filter_term(key, value) for key, value in metadata.items() if isinstance(value, Scalar)]


def filter_term(key: str, value: Scalar) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{key}={json.dumps(value, sort_keys=True, ensure_ascii=False)}"


def filter_terms(filters: Mapping[str, Scalar] | None) -> list[str]:
    """The terms a chunk must all carry to match ``filters``; ``ValueError`` for a value that is not a scalar."""
    terms = []
    for key, value in (filters or {}).items():
        if not isinstance(value, Scalar):
            raise ValueError(f"filter {key!r} must be a string, number, boolean or null (got {type(value).__name__})")
        terms.append(filter_term(key, value))
    return terms
