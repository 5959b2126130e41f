"""The Weaviate vector store (client v4): one collection per RAG collection, vectors supplied by the platform.

Untested here: no Weaviate server can run on these machines; the contract tests run when ``WEAVIATE_URL`` is set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import weaviate
from weaviate.classes.config import Configure, DataType, Property, Tokenization, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.classes.init import Auth
from weaviate.classes.query import Filter, MetadataQuery
from weaviate.collections import Collection
from weaviate.util import generate_uuid5

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

DEFAULT_GRPC_PORT = 50051
VECTOR_NAME = "default"
_PREFIX = "Rag_"
_DIMENSION = re.compile(r"dimension (\d+)$")
_RETURNED = ["chunk_id", "text", "document_id", "file", "page", "chunk_index", "metadata"]
_BATCH = 500


def _properties() -> list[Property]:
    keyword = {"tokenization": Tokenization.FIELD, "index_filterable": True, "index_searchable": False}
    return [
        Property(name="chunk_id", data_type=DataType.TEXT, **keyword),
        Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD, index_searchable=True),
        Property(name="document_id", data_type=DataType.TEXT, **keyword),
        Property(name="file", data_type=DataType.TEXT, **keyword),
        Property(name="page", data_type=DataType.INT, index_filterable=True),
        Property(name="chunk_index", data_type=DataType.INT, index_filterable=True),
        Property(name="metadata", data_type=DataType.TEXT, index_filterable=False, index_searchable=False),
        Property(name="metadata_terms", data_type=DataType.TEXT_ARRAY, **keyword),
    ]


class WeaviateStore:
    """``VectorStore`` on a Weaviate server; cosine distance, scores as similarity. Connects on first use."""

    def __init__(self, url: str, *, api_key: str = "", grpc_port: int = DEFAULT_GRPC_PORT) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"WEAVIATE_URL must look like http://host:8080 (got {url!r})")
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self.grpc_port = grpc_port
        self.api_key = api_key
        self._client: weaviate.WeaviateClient | None = None

    @property
    def client(self) -> weaviate.WeaviateClient:
        if self._client is None:
            self._client = weaviate.connect_to_custom(
                http_host=self.host,
                http_port=self.port,
                http_secure=self.secure,
                grpc_host=self.host,
                grpc_port=self.grpc_port,
                grpc_secure=self.secure,
                auth_credentials=Auth.api_key(self.api_key) if self.api_key else None,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def ensure_collection(self, name: str, dimension: int) -> None:
        class_name = _class_name(name)
        check_dimension(name, dimension)
        if not self.client.collections.exists(class_name):
            self.client.collections.create(
                class_name,
                description=f"RAG collection {name}; dimension {dimension}",
                properties=_properties(),
                vector_config=Configure.Vectors.self_provided(
                    name=VECTOR_NAME,
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
                ),
            )
            return
        check_dimension(name, dimension, self._dimension(class_name))

    def upsert(self, collection: str, records: Sequence[ChunkRecord]) -> int:
        handle = self._collection(collection)
        if not records:
            return 0
        check_records(records, self._dimension(handle.name))
        for start in range(0, len(records), _BATCH):
            objects = [_data_object(record) for record in records[start : start + _BATCH]]
            result = handle.data.insert_many(objects)
            if result.has_errors:
                first = next(iter(result.errors.values()))
                raise RuntimeError(f"Weaviate refused {len(result.errors)} chunks of {collection!r}: {first.message}")
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
        handle = self._collection(collection)
        check_query(vector, self._dimension(handle.name))
        where = _filters(filters, document_ids)
        if (threshold is not None and threshold > 1.0) or where is False:
            return []
        response = handle.query.near_vector(
            [float(value) for value in vector],
            target_vector=VECTOR_NAME,
            limit=top_k,
            distance=None if threshold is None else 1.0 - threshold,
            filters=where,
            return_metadata=MetadataQuery(distance=True),
            return_properties=_RETURNED,
        )
        hits = [_hit(item.properties, 1.0 - item.metadata.distance) for item in response.objects]
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
        handle = self._collection(collection)
        if vector is not None:
            check_query(vector, self._dimension(handle.name))
        where = _filters(filters, document_ids)
        if not query.strip() or where is False:
            return []
        response = handle.query.bm25(
            query,
            query_properties=["text"],
            limit=top_k,
            filters=where,
            include_vector=vector is not None,
            return_metadata=MetadataQuery(score=True),
            return_properties=_RETURNED,
        )
        if vector is None:
            return [_hit(item.properties, item.metadata.score or 0.0) for item in response.objects]
        return [_hit(item.properties, cosine(vector, _vector_of(item.vector))) for item in response.objects]

    def ping(self) -> bool:
        try:
            return bool(self.client.is_ready())
        except Exception:  # noqa: BLE001 - a server that cannot be reached is not ready
            return False

    def settle(self, collection: str) -> None:
        """Weaviate indexes each object as it is written (HNSW): nothing to fold in; the collection must exist."""
        self._collection(collection)

    def delete_document(self, collection: str, document_id: str) -> int:
        """Deletes every chunk of the document: one ``delete_many`` removes at most the server's
        ``QUERY_MAXIMUM_RESULTS`` objects, so it is called until none matches."""
        handle = self._collection(collection)
        where = Filter.by_property("document_id").equal(document_id)
        deleted = 0
        while True:
            result = handle.data.delete_many(where=where)
            deleted += int(result.successful)
            if not result.matches:
                return deleted
            if not result.successful:
                raise RuntimeError(f"Weaviate deleted none of the {result.matches} chunks of {document_id}")

    def drop_collection(self, name: str) -> int:
        class_name = _class_name(name)
        if not self.client.collections.exists(class_name):
            return 0
        chunks = self.count(name)
        self.client.collections.delete(class_name)
        return chunks

    def count(self, collection: str, document_id: str | None = None) -> int:
        class_name = _class_name(collection)
        if not self.client.collections.exists(class_name):
            return 0
        where = None if document_id is None else Filter.by_property("document_id").equal(document_id)
        result = self.client.collections.use(class_name).aggregate.over_all(filters=where, total_count=True)
        return int(result.total_count or 0)

    def list_collections(self) -> list[str]:
        names = (_collection_name(class_name) for class_name in self.client.collections.list_all(simple=True))
        return sorted(name for name in names if name is not None)

    def _collection(self, name: str) -> Collection:
        class_name = _class_name(name)
        if not self.client.collections.exists(class_name):
            raise CollectionNotFound(name)
        return self.client.collections.use(class_name)

    def _dimension(self, class_name: str) -> int:
        description = self.client.collections.use(class_name).config.get(simple=True).description or ""
        found = _DIMENSION.search(description)
        if found is None:
            raise ValueError(f"Weaviate collection {class_name} was not made by this platform (no dimension)")
        return int(found.group(1))


def _class_name(name: str) -> str:
    """A GraphQL class name for a collection name, one to one: '_' as '__', '-' as '_h', an upper-case letter
    X as '_u' + x (the server capitalises the first letter and may fold case)."""
    check_collection_name(name)
    escaped = []
    for character in name:
        if character == "_":
            escaped.append("__")
        elif character == "-":
            escaped.append("_h")
        elif character.isupper():
            escaped.append("_u" + character.lower())
        else:
            escaped.append(character)
    return _PREFIX + "".join(escaped)


def _collection_name(class_name: str) -> str | None:
    """The collection name of a class made by ``_class_name``; ``None`` for any other class."""
    if not class_name.startswith(_PREFIX):
        return None
    encoded, name, index = class_name[len(_PREFIX) :], [], 0
    while index < len(encoded):
        if encoded[index] != "_":
            name.append(encoded[index])
            index += 1
            continue
        escape = encoded[index + 1 : index + 2]
        if escape == "_":
            name.append("_")
        elif escape == "h":
            name.append("-")
        elif escape == "u" and index + 2 < len(encoded):
            name.append(encoded[index + 2].upper())
            index += 1
        else:
            return None
        index += 2
    return "".join(name) or None


def _data_object(record: ChunkRecord) -> DataObject:
    return DataObject(
        uuid=generate_uuid5(record.chunk_id),
        vector={VECTOR_NAME: [float(value) for value in record.vector]},
        properties={
            "chunk_id": record.chunk_id,
            "text": record.text,
            "document_id": record.document_id,
            "file": record.file,
            "page": record.page,
            "chunk_index": record.chunk_index,
            "metadata": metadata_json(record.metadata),
            "metadata_terms": metadata_terms(record.metadata),
        },
    )


def _filters(filters: Mapping[str, Scalar] | None, document_ids: Sequence[str] | None) -> Any:
    """The Weaviate filter for both restrictions, ``None`` for none, ``False`` when nothing can match."""
    clauses = []
    terms = filter_terms(filters)
    if terms:
        clauses.append(Filter.by_property("metadata_terms").contains_all(terms))
    if document_ids is not None:
        if not document_ids:
            return False
        clauses.append(Filter.by_property("document_id").contains_any(list(document_ids)))
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else Filter.all_of(clauses)


def _vector_of(vectors: Any) -> Sequence[float]:
    """The object's vector: the client gives named vectors as ``{VECTOR_NAME: [...]}``."""
    return vectors[VECTOR_NAME] if isinstance(vectors, Mapping) else vectors


def _hit(properties: Mapping[str, Any], score: float) -> Hit:
    page = properties.get("page")
    return Hit(
        chunk_id=properties["chunk_id"],
        text=properties["text"],
        score=float(score),
        document_id=properties["document_id"],
        file=properties["file"],
        page=None if page is None else int(page),
        chunk_index=int(properties["chunk_index"]),
        metadata=json.loads(properties.get("metadata") or "{}"),
    )
