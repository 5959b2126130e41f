"""``/admin``: stored API keys (create, list, revoke, rotate), usage per key and the audit log; admin keys only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import current_app, g
from flask.views import MethodView

from config import audit, keys
from config.errors import ApiError
from web.api import Blueprint
from web.auth import key_cache
from web.quotas import usage_report
from web.schemas.admin import (
    AuditListSchema,
    AuditQuerySchema,
    KeyCreateSchema,
    KeyListSchema,
    KeySchema,
    KeysUsageSchema,
)

blp = Blueprint("admin", __name__, url_prefix="/admin", description="Operators: API keys, usage and the audit log")


def _changed(action: str, key: keys.KeyRecord, secret: str | None = None) -> dict[str, Any]:
    """The answer to a key change, which this process's key cache forgets at once (others within their TTL)."""
    key_cache().forget()
    g.audit_action, g.audit_target = f"keys.{action}", key.name
    shown = key.public(datetime.now(UTC))
    return {**shown, **({"secret": secret} if secret else {}), "request_id": g.request_id}


def _find(name_or_id: str) -> None:
    try:
        keys.find(name_or_id)
    except keys.KeyChangeError:
        raise ApiError(404, f"No key is named '{name_or_id}' or has that id", code="key_not_found") from None


@blp.route("/keys")
class Keys(MethodView):
    @blp.response(200, KeyListSchema)
    def get(self):
        now = datetime.now(UTC)
        return {"keys": [key.public(now) for key in keys.all_keys()], "request_id": g.request_id}

    @blp.arguments(KeyCreateSchema)
    @blp.response(201, KeySchema)
    @blp.alt_response(409, description="A key has this name already")
    def post(self, body: dict[str, Any]):
        try:
            key, secret = keys.create(body["name"], body["scopes"], body.get("expires_in_days"), body["quotas"])
        except keys.KeyChangeError as exc:
            raise ApiError(409, str(exc), code="key_exists", param="name") from None
        return _changed("create", key, secret)


@blp.route("/keys/<name_or_id>")
class OneKey(MethodView):
    @blp.response(200, KeySchema)
    @blp.alt_response(404, description="No such key")
    def delete(self, name_or_id: str):
        _find(name_or_id)
        return _changed("revoke", keys.revoke(name_or_id))


@blp.route("/keys/<name_or_id>/rotate")
class KeyRotation(MethodView):
    @blp.response(200, KeySchema)
    @blp.alt_response(404, description="No such key")
    @blp.alt_response(409, description="The key is revoked")
    def post(self, name_or_id: str):
        _find(name_or_id)
        try:
            key, secret = keys.rotate(name_or_id)
        except keys.KeyChangeError as exc:
            raise ApiError(409, str(exc), code="key_revoked") from None
        return _changed("rotate", key, secret)


@blp.route("/usage")
class Usage(MethodView):
    @blp.response(200, KeysUsageSchema)
    def get(self):
        return {"keys": usage_report(current_app.extensions["redis"]), "request_id": g.request_id}


@blp.route("/audit")
class Audit(MethodView):
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditListSchema)
    def get(self, query: dict[str, Any]):
        return {"entries": audit.search(audit.AuditFilter(**query)), "request_id": g.request_id}
