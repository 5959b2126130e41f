"""Model listing bodies (OpenAI's ``list`` of ``model`` objects, with the registry's metadata)."""

from __future__ import annotations

from marshmallow import Schema, fields


class ModelSchema(Schema):
    id = fields.String()
    object = fields.String()
    created = fields.Integer()
    owned_by = fields.String()
    family = fields.String()
    type = fields.String()
    context_length = fields.Integer(allow_none=True)
    tags = fields.List(fields.String())
    tier = fields.String()
    description = fields.String()
    vram_usage_gb = fields.Float()
    status = fields.String()
    workers = fields.Integer()
    error = fields.String(allow_none=True)
    request_id = fields.String()


class ModelListSchema(Schema):
    object = fields.String()
    data = fields.List(fields.Nested(ModelSchema))
    request_id = fields.String()
