"""``/v1/vector_stores`` bodies and answers, in OpenAI's shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates

from web.schemas.fields import OpenAIPageSchema, OpenSchema, storable_keys

MAX_KEYS = 16
MAX_FILES = 500
MAX_RESULTS = 50


def _attributes(value: dict) -> None:
    storable_keys(value)
    for key, item in value.items():
        if len(key) > 64 or not isinstance(item, str | int | float | bool) or len(str(item)) > 512:
            raise ValidationError(
                f"attribute {key!r}: keys of at most 64 characters, values strings of at most 512"
                " characters, numbers or booleans"
            )


def _not_applied(why: str) -> Callable[[Any], None]:
    """Refuses a field the platform cannot apply (a 400 naming it, never silence)."""

    def refuse(_value: Any) -> None:
        raise ValidationError(f"Not supported: {why}")

    return refuse


METADATA = {
    "keys": fields.String(validate=validate.Length(max=64)),
    "values": fields.String(validate=validate.Length(max=512)),
    "allow_none": True,
    "validate": [validate.Length(max=MAX_KEYS), storable_keys],
}


class StaticChunkingSchema(Schema):
    max_chunk_size_tokens = fields.Integer(required=True, validate=validate.Range(min=16, max=4096))
    chunk_overlap_tokens = fields.Integer(required=True, validate=validate.Range(min=0))


class ChunkingStrategySchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(("auto", "static")))
    static = fields.Nested(StaticChunkingSchema)


class VectorStoreCreateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(validate=validate.Length(max=256))
    description = fields.Raw(
        validate=_not_applied("a store has no description here"), metadata={"description": "Not supported: a 400"}
    )
    metadata = fields.Dict(**METADATA)
    file_ids = fields.List(
        fields.String(validate=validate.Length(min=1, max=200)), validate=validate.Length(max=MAX_FILES)
    )
    chunking_strategy = fields.Nested(ChunkingStrategySchema)
    expires_after = fields.Raw(
        validate=_not_applied("stores do not expire here"), metadata={"description": "Not supported: a 400"}
    )


class ListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    after = fields.String(load_default=None, validate=validate.Length(max=200))
    before = fields.String(load_default=None, validate=validate.Length(max=200))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))
    order = fields.String(load_default="desc", validate=validate.OneOf(("asc", "desc")))


class FileListQuerySchema(ListQuerySchema):
    filter = fields.String(validate=validate.OneOf(("in_progress", "completed", "failed", "cancelled")))


class VectorStoreFileCreateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    file_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    attributes = fields.Dict(allow_none=True, validate=[validate.Length(max=MAX_KEYS), _attributes])
    chunking_strategy = fields.Nested(ChunkingStrategySchema)


class RankingOptionsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    ranker = fields.String(validate=validate.OneOf(("none", "auto", "default-2024-11-15")))
    score_threshold = fields.Float(validate=validate.Range(min=0, max=1))
    hybrid_search = fields.Dict(
        metadata={"description": "Present: hybrid search (vector and full-text ranks fused); its weights are not used"}
    )


class SearchSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    query = fields.Raw(required=True, metadata={"description": "A string, or a list of strings searched as one"})
    max_num_results = fields.Integer(load_default=10, validate=validate.Range(min=1, max=MAX_RESULTS))
    filters = fields.Dict(allow_none=True)
    ranking_options = fields.Nested(RankingOptionsSchema)
    rewrite_query = fields.Boolean(
        load_default=False, metadata={"description": "Accepted; the query is searched as written (no generation)"}
    )

    @validates("query")
    def _query(self, value: object, **_kwargs: object) -> None:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValidationError("query must be a non-empty string or a list of them")


class FileCountsSchema(OpenSchema):
    in_progress = fields.Integer()
    completed = fields.Integer()
    failed = fields.Integer()
    cancelled = fields.Integer()
    total = fields.Integer()


class VectorStoreSchema(OpenSchema):
    id = fields.String()
    object = fields.String()
    created_at = fields.Integer()
    name = fields.String()
    usage_bytes = fields.Integer()
    file_counts = fields.Nested(FileCountsSchema)
    status = fields.String()
    last_active_at = fields.Integer()
    metadata = fields.Dict()


class VectorStoreListSchema(OpenAIPageSchema):
    data = fields.List(fields.Nested(VectorStoreSchema))


class VectorStoreFileSchema(OpenSchema):
    id = fields.String()
    object = fields.String()
    created_at = fields.Integer()
    vector_store_id = fields.String()
    status = fields.String()
    last_error = fields.Dict(allow_none=True)
    usage_bytes = fields.Integer()
    attributes = fields.Dict()


class VectorStoreFileListSchema(VectorStoreListSchema):
    data = fields.List(fields.Nested(VectorStoreFileSchema))


class DeletedSchema(OpenSchema):
    id = fields.String()
    object = fields.String()
    deleted = fields.Boolean()


class SearchResultSchema(OpenSchema):
    file_id = fields.String()
    filename = fields.String()
    score = fields.Float()
    attributes = fields.Dict()
    content = fields.List(fields.Dict())


class SearchPageSchema(OpenSchema):
    object = fields.String()
    search_query = fields.List(fields.String())
    data = fields.List(fields.Nested(SearchResultSchema))
    has_more = fields.Boolean()
    next_page = fields.String(allow_none=True)
