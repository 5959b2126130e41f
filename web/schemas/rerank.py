"""Rerank and score bodies: Jina's and Cohere's ``/v1/rerank``, vLLM's ``/v1/score``."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from web.schemas.fields import MODEL_ID, StringOrStringList

MAX_DOCUMENTS = 1000


class Documents(fields.Field):
    """Passages as strings or as objects with ``text`` (Jina's and Cohere's shapes), loaded as strings. An object
    with any other field is refused (an image, say, would not be read)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, list) or not value:
            raise ValidationError("Must be a non-empty array of strings or of objects with text.")
        if len(value) > MAX_DOCUMENTS:
            raise ValidationError(f"At most {MAX_DOCUMENTS} documents are allowed.")
        texts = []
        for index, document in enumerate(value):
            if isinstance(document, dict):
                if set(document) != {"text"}:
                    raise ValidationError(f"documents[{index}] must be a string or an object with only text.")
                document = document["text"]
            if not isinstance(document, str) or not document:
                raise ValidationError(f"documents[{index}] must be a non-empty string.")
            texts.append(document)
        return texts


class RerankRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    query = fields.String(required=True, validate=validate.Length(min=1))
    documents = Documents(
        required=True,
        metadata={"description": "Strings, or objects with text", "type": "array", "items": {}, "maxItems": 1000},
    )
    top_n = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    return_documents = fields.Boolean(load_default=True)


class RerankDocumentSchema(Schema):
    text = fields.String()


class RerankResultSchema(Schema):
    index = fields.Integer(required=True)
    relevance_score = fields.Float(required=True)
    document = fields.Nested(RerankDocumentSchema, metadata={"description": "With return_documents"})


class RerankUsageSchema(Schema):
    prompt_tokens = fields.Integer()
    total_tokens = fields.Integer()


class RerankResponseSchema(Schema):
    id = fields.String()
    model = fields.String()
    results = fields.List(fields.Nested(RerankResultSchema), metadata={"description": "Most relevant first"})
    usage = fields.Nested(RerankUsageSchema)
    request_id = fields.String()


class ScoreRequestSchema(Schema):
    """``text_1`` against each of ``text_2`` (one text against many), or pair by pair (two lists of one length)."""

    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    text_1 = StringOrStringList(required=True, max_items=MAX_DOCUMENTS, allow_empty_strings=False)
    text_2 = StringOrStringList(required=True, max_items=MAX_DOCUMENTS, allow_empty_strings=False)

    @validates_schema
    def _pairs(self, data: dict[str, Any], **_kwargs: Any) -> None:
        first, second = data.get("text_1") or [], data.get("text_2") or []
        if len(first) > 1 and len(first) != len(second):
            raise ValidationError(
                f"text_1 has {len(first)} texts and text_2 {len(second)}: give one text_1, or as many as text_2.",
                "text_2",
            )


class ScoreDataSchema(Schema):
    index = fields.Integer()
    object = fields.String()
    score = fields.Float()


class ScoreResponseSchema(Schema):
    id = fields.String()
    object = fields.String()
    created = fields.Integer()
    model = fields.String()
    data = fields.List(fields.Nested(ScoreDataSchema))
    usage = fields.Nested(RerankUsageSchema)
    request_id = fields.String()
