"""Embedding request and response bodies (OpenAI's shapes, plus ``request_id``)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from web.schemas.fields import MODEL_ID, USER, EmbeddingInput

MAX_INPUTS = 2048


class EmbeddingRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    input = EmbeddingInput(required=True, max_items=MAX_INPUTS, allow_empty_strings=False)
    encoding_format = fields.String(load_default="float", validate=validate.OneOf(("float", "base64")))
    dimensions = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    user = fields.String(allow_none=True, validate=USER)


class EmbeddingSchema(Schema):
    object = fields.String()
    index = fields.Integer()
    embedding = fields.Raw()


class EmbeddingUsageSchema(Schema):
    prompt_tokens = fields.Integer()
    total_tokens = fields.Integer()


class EmbeddingListSchema(Schema):
    object = fields.String()
    data = fields.List(fields.Nested(EmbeddingSchema))
    model = fields.String()
    usage = fields.Nested(EmbeddingUsageSchema)
    request_id = fields.String()
