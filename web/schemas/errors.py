"""The error body of every route: OpenAI's envelope (Anthropic's adds ``"type": "error"`` beside it)."""

from __future__ import annotations

from marshmallow import Schema, fields


class ErrorDetailSchema(Schema):
    type = fields.String(required=True, metadata={"description": "e.g. invalid_request_error, not_found_error"})
    message = fields.String(required=True)
    param = fields.String(allow_none=True, metadata={"description": "the request field at fault, if one is"})
    code = fields.String(allow_none=True, metadata={"description": "e.g. invalid_value, model_not_found"})


class ErrorEnvelopeSchema(Schema):
    error = fields.Nested(ErrorDetailSchema, required=True)
    type = fields.String(metadata={"description": "``error``: on the Anthropic Messages routes only"})
    request_id = fields.String()
