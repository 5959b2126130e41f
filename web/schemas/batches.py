"""``/v1/batches`` bodies and answers, in OpenAI's shapes."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from tasks.batch_input import ENDPOINTS
from web.schemas.fields import OpenAIPageSchema, OpenSchema, storable_keys

MAX_METADATA_KEYS = 16


class BatchCreateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    input_file_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    endpoint = fields.String(required=True, validate=validate.OneOf(tuple(ENDPOINTS)))
    completion_window = fields.String(required=True, validate=validate.OneOf(("24h",)))
    metadata = fields.Dict(
        keys=fields.String(validate=validate.Length(max=64)),
        values=fields.String(validate=validate.Length(max=512)),
        allow_none=True,
        validate=[validate.Length(max=MAX_METADATA_KEYS), storable_keys],
    )


class BatchListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    after = fields.String(load_default=None, validate=validate.Length(max=200))
    limit = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class RequestCountsSchema(OpenSchema):
    total = fields.Integer()
    completed = fields.Integer()
    failed = fields.Integer()


class BatchObjectSchema(OpenSchema):
    id = fields.String()
    object = fields.String()
    endpoint = fields.String()
    input_file_id = fields.String()
    completion_window = fields.String()
    status = fields.String()
    output_file_id = fields.String(allow_none=True)
    error_file_id = fields.String(allow_none=True)
    created_at = fields.Integer()
    in_progress_at = fields.Integer(allow_none=True)
    completed_at = fields.Integer(allow_none=True)
    cancelled_at = fields.Integer(allow_none=True)
    request_counts = fields.Nested(RequestCountsSchema)
    metadata = fields.Dict(allow_none=True)


class BatchListSchema(OpenAIPageSchema):
    data = fields.List(fields.Nested(BatchObjectSchema))
