"""RAG request and response bodies (specification section 4)."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from rag.retrieval import MODES
from rag.vectors import COLLECTION_NAME
from web.schemas.chat import SamplingSchema, generation_payload

MAX_TOP_K = 50
MAX_RERANK_CANDIDATES = 200
DEFAULT_RERANK_CANDIDATES = 30


def collection_field(**kwargs: Any) -> fields.String:
    return fields.String(
        validate=validate.Regexp(
            COLLECTION_NAME, error="Must be 1-63 letters, digits, '_' or '-', starting with a letter or digit."
        ),
        **kwargs,
    )


class JsonObject(fields.Field):
    """A JSON object, sent as a form field's JSON text."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, Any]:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValidationError(f"Must be a JSON object ({exc.msg}).") from None
        if not isinstance(value, dict):
            raise ValidationError("Must be a JSON object.")
        return value


class IngestFormSchema(Schema):
    """The form fields of ``POST /api/rag/ingest``; the files come as ``files`` (or ``files[]``, ``file``)."""

    class Meta:
        unknown = EXCLUDE

    collection = collection_field(required=True)
    chunk_size = fields.Integer(validate=validate.Range(min=16, max=8192))
    overlap = fields.Integer(validate=validate.Range(min=0))
    embedding_model = fields.String(validate=validate.Length(min=1))
    metadata = JsonObject(load_default=dict)
    async_ = fields.Boolean(data_key="async", load_default=False)
    callback_url = fields.String(validate=validate.Length(min=1, max=2000))
    shared = fields.Boolean(
        metadata={
            "description": "the collection is readable by every API key (still written only by its owner); "
            "set when it is created, or changed by its owner on a later ingest"
        }
    )
    rerank_model = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={
            "description": "the collection's reranker (a rerank model or a chat model) for queries with rerank: "
            "true that name none; set when it is created, or changed by its owner on a later ingest"
        },
    )

    @validates_schema
    def _overlap_below_chunk_size(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if "overlap" in data and "chunk_size" in data and data["overlap"] >= data["chunk_size"]:
            raise ValidationError("Must be less than chunk_size.", field_name="overlap")


class IngestResultSchema(Schema):
    collection = fields.String()
    documents_ingested = fields.Integer()
    chunks_created = fields.Integer()
    embedding_time_ms = fields.Integer()
    document_ids = fields.List(fields.String())
    duplicates = fields.List(
        fields.String(),
        metadata={
            "description": "Files already in the collection (same content): their existing document ids, nothing added"
        },
    )
    chunk_size = fields.Integer()
    overlap = fields.Integer()
    embedding_model = fields.String()
    total_time_ms = fields.Integer()
    status = fields.String()
    request_id = fields.String()


class GenerationConfigSchema(SamplingSchema):
    class Meta:
        unknown = RAISE

    n = fields.Integer(validate=validate.Equal(1, error="A RAG query answers once; n must be 1."))


class RagQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    query = fields.String(required=True, validate=validate.Length(min=1, max=8000))
    collection = collection_field(load_default="default")
    top_k = fields.Integer(load_default=5, validate=validate.Range(min=1, max=MAX_TOP_K))
    model_id = fields.String(validate=validate.Length(min=1))
    embedding_model = fields.String(validate=validate.Length(min=1))
    include_sources = fields.Boolean(load_default=True)
    similarity_threshold = fields.Float(load_default=0.7, validate=validate.Range(min=-1, max=1))
    rerank = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Rerank the first rerank_candidates of the retrieval with rerank_model, else the "
            "collection's reranker, else the first loaded rerank model (a 400 naming what to load when none is)"
        },
    )
    rerank_model = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "With rerank: a rerank model (cross-encoder) or a chat model (pointwise)"},
    )
    rerank_candidates = fields.Integer(
        validate=validate.Range(min=1, max=MAX_RERANK_CANDIDATES),
        metadata={
            "description": f"With rerank: how many retrieved chunks are reranked (default {DEFAULT_RERANK_CANDIDATES})"
        },
    )
    retrieval_mode = fields.String(
        load_default="vector",
        validate=validate.OneOf(MODES),
        metadata={"description": "vector: cosine similarity; hybrid: vector and full-text (BM25) ranks fused"},
    )
    filters = fields.Dict(
        keys=fields.String(),
        load_default=None,
        metadata={"description": "Metadata every retrieved chunk must equal (ingest metadata keys)"},
    )
    stream = fields.Boolean(load_default=False)
    generation_config = fields.Nested(GenerationConfigSchema, load_default=dict)

    @validates_schema
    def _rerank_settings_need_rerank(self, data: dict[str, Any], **_kwargs: Any) -> None:
        for name in ("rerank_model", "rerank_candidates"):
            if name in data and not data.get("rerank"):
                raise ValidationError(f"{name} applies only with rerank: true.", name)

    @validates_schema
    def _scalar_filters(self, data: dict[str, Any], **_kwargs: Any) -> None:
        for key, value in (data.get("filters") or {}).items():
            if not isinstance(value, str | int | float | bool) and value is not None:
                raise ValidationError(f"Filter {key!r} must be a string, number, boolean or null.", "filters")


class SourceSchema(Schema):
    chunk_id = fields.String()
    text = fields.String()
    score = fields.Float(metadata={"description": "Cosine similarity of the chunk to the query"})
    rerank_score = fields.Float(metadata={"description": "With rerank: the reranker's relevance score (the order)"})
    metadata = fields.Dict()


class RagAnswerSchema(Schema):
    answer = fields.String()
    sources = fields.List(fields.Nested(SourceSchema))
    retrieval_latency_ms = fields.Float()
    generation_latency_ms = fields.Float()
    total_latency_ms = fields.Float()
    finish_reason = fields.String()
    usage = fields.Dict()
    metadata = fields.Dict()
    request_id = fields.String()


class CollectionSummarySchema(Schema):
    name = fields.String()
    document_count = fields.Integer()
    chunk_count = fields.Integer()
    created_at = fields.String()
    updated_at = fields.String()
    metadata = fields.Dict()
    shared = fields.Boolean(metadata={"description": "readable by every API key"})


class CollectionListSchema(Schema):
    collections = fields.List(fields.Nested(CollectionSummarySchema))
    request_id = fields.String()


class DocumentSummarySchema(Schema):
    document_id = fields.String()
    filename = fields.String()
    chunk_count = fields.Integer()
    ingested_at = fields.String()
    metadata = fields.Dict()


class CollectionSchema(CollectionSummarySchema):
    embedding_model = fields.String()
    rerank_model = fields.String(allow_none=True, metadata={"description": "The collection's reranker, if set"})
    chunk_size = fields.Integer()
    overlap = fields.Integer()
    documents = fields.List(fields.Nested(DocumentSummarySchema))
    request_id = fields.String()


class DocumentDeletedSchema(Schema):
    collection = fields.String()
    document_id = fields.String()
    chunks_deleted = fields.Integer()
    status = fields.String()
    request_id = fields.String()


class CollectionDeletedSchema(Schema):
    collection = fields.String()
    documents_deleted = fields.Integer()
    chunks_deleted = fields.Integer()
    status = fields.String()
    request_id = fields.String()


def rag_query_input(loaded: dict[str, Any], model_id: str) -> dict[str, Any]:
    """What the control worker needs of a validated query (``RagService.answer``): retrieval settings, the
    chat model and its generation settings."""
    return {
        "retrieval": {
            "query": loaded["query"],
            "collection": loaded["collection"],
            "top_k": loaded["top_k"],
            "similarity_threshold": loaded["similarity_threshold"],
            "filters": loaded.get("filters"),
            "mode": loaded["retrieval_mode"],
            "rerank": loaded["rerank"],
            "rerank_model": loaded.get("rerank_model"),
            "rerank_candidates": loaded.get("rerank_candidates") or DEFAULT_RERANK_CANDIDATES,
            "embedding_model": loaded.get("embedding_model"),
        },
        "model_id": model_id,
        "generation": generation_payload(loaded["generation_config"]),
        "include_sources": loaded["include_sources"],
    }
