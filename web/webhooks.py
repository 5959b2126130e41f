"""Webhook subscriptions (specification sections 5.5-5.7) and each webhook's delivery log."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask.views import MethodView

from config.errors import ApiError
from tasks import webhooks
from tasks.urls import UnsafeUrl
from web.api import Blueprint
from web.identity import current_caller
from web.schemas.webhooks import (
    DeliveryListSchema,
    DeliveryQuerySchema,
    WebhookDeletedSchema,
    WebhookListSchema,
    WebhookRequestSchema,
    WebhookSchema,
)

blp = Blueprint("webhooks", __name__, url_prefix="/api/mcp", description="Webhooks: signed job-event callbacks")


def find_webhook(webhook_id: str) -> webhooks.Webhook:
    webhook = webhooks.get_webhook(webhook_id, current_caller().sees)
    if webhook is None:
        raise ApiError(404, f"Webhook '{webhook_id}' not found", code="webhook_not_found", param="webhook_id")
    return webhook


@blp.route("/webhooks")
class Webhooks(MethodView):
    @blp.arguments(WebhookRequestSchema)
    @blp.response(201, WebhookSchema)
    @blp.alt_response(400, description="Invalid URL (not http(s), or resolving to a private address) or events")
    def post(self, body: dict[str, Any]):
        networks = current_app.extensions["settings"].webhook_networks
        try:
            caller = current_caller()
            view = webhooks.register(
                body["url"],
                body["events"],
                body.get("secret"),
                body.get("metadata"),
                networks,
                caller.owner,
                caller.sees,
            )
        except UnsafeUrl as exc:
            raise ApiError(400, f"url refused: {exc}", code="invalid_url", param="url") from None
        except ValueError as exc:
            raise ApiError(400, f"Invalid secret: {exc}", code="invalid_value", param="secret") from None
        return {**view, "request_id": g.request_id}

    @blp.response(200, WebhookListSchema)
    def get(self):
        listed = webhooks.list_webhooks(current_caller().sees)
        return {"webhooks": [w.public() for w in listed], "request_id": g.request_id}


@blp.route("/webhooks/<webhook_id>")
class WebhookDetail(MethodView):
    @blp.response(200, WebhookSchema)
    @blp.alt_response(404, description="Webhook not found")
    def get(self, webhook_id: str):
        return {**find_webhook(webhook_id).public(), "request_id": g.request_id}

    @blp.response(200, WebhookDeletedSchema)
    @blp.alt_response(404, description="Webhook not found")
    def delete(self, webhook_id: str):
        if not webhooks.delete_webhook(webhook_id, current_caller().sees):
            find_webhook(webhook_id)
        return {"webhook_id": webhook_id, "status": "deleted", "request_id": g.request_id}


@blp.route("/webhooks/<webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @blp.arguments(DeliveryQuerySchema, location="query")
    @blp.response(200, DeliveryListSchema)
    @blp.alt_response(404, description="Webhook not found")
    def get(self, query: dict[str, Any], webhook_id: str):
        find_webhook(webhook_id)
        deliveries, total = webhooks.list_deliveries(webhook_id, query["limit"], query["offset"])
        return {
            "deliveries": [d.public() for d in deliveries],
            "total": total,
            "limit": query["limit"],
            "offset": query["offset"],
            "request_id": g.request_id,
        }
