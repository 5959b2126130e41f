"""Bodies of the admin routes: stored API keys, usage per key and the audit log."""

from __future__ import annotations

from datetime import UTC

from marshmallow import EXCLUDE, Schema, fields, validate

from config.keys import SCOPES


class QuotasSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    tokens_per_day = fields.Integer(validate=validate.Range(min=1, max=2**53), allow_none=True)
    concurrent_streams = fields.Integer(validate=validate.Range(min=1, max=100_000), allow_none=True)
    queued_jobs = fields.Integer(validate=validate.Range(min=1, max=1_000_000), allow_none=True)


class KeyCreateSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9._-]{1,64}$"))
    scopes = fields.List(fields.String(validate=validate.OneOf(SCOPES)), required=True, validate=validate.Length(min=1))
    expires_in_days = fields.Float(validate=validate.Range(min=0, min_inclusive=False, max=36500), allow_none=True)
    quotas = fields.Nested(QuotasSchema, load_default=dict)


class KeySchema(Schema):
    id = fields.String()
    name = fields.String()
    scopes = fields.List(fields.String())
    state = fields.String(metadata={"description": "active, revoked or expired"})
    created_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True, metadata={"description": "Written at most once a minute"})
    revoked_at = fields.DateTime(allow_none=True)
    quotas = fields.Nested(QuotasSchema)
    secret = fields.String(metadata={"description": "Only when the key is created or rotated: shown once."})
    request_id = fields.String()


class KeyListSchema(Schema):
    keys = fields.List(fields.Nested(KeySchema))
    request_id = fields.String()


class KeyUsageSchema(Schema):
    id = fields.String()
    name = fields.String()
    requests = fields.Integer()
    tokens = fields.Integer()
    tokens_today = fields.Integer(metadata={"description": "Since 00:00 UTC"})
    open_streams = fields.Integer()
    queued_jobs = fields.Integer()
    quotas = fields.Nested(QuotasSchema)


class KeysUsageSchema(Schema):
    keys = fields.List(fields.Nested(KeyUsageSchema))
    request_id = fields.String()


class AuditQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    key = fields.String(validate=validate.Length(min=1, max=100), metadata={"description": "A key's name or id"})
    action = fields.String(
        validate=validate.Length(min=1, max=300),
        metadata={"description": "An action or its start: 'keys.', 'POST /v1/models'"},
    )
    since = fields.AwareDateTime(default_timezone=UTC)
    until = fields.AwareDateTime(default_timezone=UTC)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class AuditEntrySchema(Schema):
    at = fields.DateTime()
    actor = fields.String(metadata={"description": "The key's name; 'admin' for API_KEYS, 'cli:<user>'"})
    actor_id = fields.String(allow_none=True)
    action = fields.String()
    target = fields.String(allow_none=True)
    remote = fields.String(allow_none=True)
    status = fields.Integer()


class AuditListSchema(Schema):
    entries = fields.List(fields.Nested(AuditEntrySchema))
    request_id = fields.String()
