"""Webhook subscription bodies (specification sections 5.5-5.7) and the delivery log."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from tasks.job_states import EVENTS
from web.schemas.fields import storable_keys


class WebhookRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    url = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    events = fields.List(fields.String(validate=validate.OneOf(EVENTS)), required=True, validate=validate.Length(min=1))
    secret = fields.String(allow_none=True, validate=validate.Length(min=8, max=200))
    metadata = fields.Dict(keys=fields.String(), load_default=dict, validate=storable_keys)


class WebhookSchema(Schema):
    webhook_id = fields.String()
    url = fields.String()
    events = fields.List(fields.String())
    status = fields.String()
    created_at = fields.String()
    last_triggered_at = fields.String(allow_none=True)
    success_count = fields.Integer()
    failure_count = fields.Integer()
    disabled_reason = fields.String()
    metadata = fields.Dict()
    secret = fields.String(metadata={"description": "Only when the platform generated it: shown once."})
    request_id = fields.String()


class WebhookListSchema(Schema):
    webhooks = fields.List(fields.Nested(WebhookSchema))
    request_id = fields.String()


class WebhookDeletedSchema(Schema):
    webhook_id = fields.String()
    status = fields.String()
    request_id = fields.String()


class DeliveryQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000_000))


class AttemptSchema(Schema):
    number = fields.Integer()
    at = fields.String()
    status_code = fields.Integer()
    error = fields.String()
    duration_ms = fields.Float()
    retry_in_seconds = fields.Float()


class DeliverySchema(Schema):
    delivery_id = fields.String()
    webhook_id = fields.String()
    job_id = fields.String(allow_none=True)
    event = fields.String()
    url = fields.String()
    status = fields.String()
    attempt_count = fields.Integer()
    attempts = fields.List(fields.Nested(AttemptSchema))
    created_at = fields.String()
    next_attempt_at = fields.String(allow_none=True)
    delivered_at = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)


class DeliveryListSchema(Schema):
    deliveries = fields.List(fields.Nested(DeliverySchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()
    request_id = fields.String()
