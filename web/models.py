"""``GET /v1/models`` and ``GET /v1/models/{id}`` (ids may contain ``/``, raw or percent-encoded)."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask.views import MethodView

from models import registry
from tasks.errors import ApiError
from web.api import Blueprint
from web.schemas.models import ModelListSchema, ModelSchema

blp = Blueprint("models", __name__, url_prefix="/v1", description="Models and their state")

OWNER = "local-mlx"


def describe(record: registry.ModelRecord, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAI model object of ``record``; ``status`` is ``loaded`` only while a worker is alive."""
    if workers:
        status = "loaded"
    elif record.status == "loaded":
        status = "unavailable"
    else:
        status = record.status
    memory = max((w.get("memory_bytes", 0) for w in workers), default=record.memory_bytes or 0)
    return {
        "id": record.model_id,
        "object": "model",
        "created": record.created,
        "owned_by": OWNER,
        "family": record.family,
        "type": record.model_type,
        "context_length": record.context_length,
        "tags": list(record.tags),
        "tier": record.tier,
        "description": record.description,
        "vram_usage_gb": round(memory / 1e9, 3),
        "status": status,
        "workers": len(workers),
        "error": record.error,
    }


@blp.route("/models")
class ModelList(MethodView):
    @blp.response(200, ModelListSchema)
    def get(self):
        live = current_app.extensions["liveness"].models()
        data = [describe(record, live.get(record.model_id, [])) for record in registry.list_records()]
        return {"object": "list", "data": data, "request_id": g.request_id}


@blp.route("/models/<path:model_id>")
class ModelDetail(MethodView):
    @blp.response(200, ModelSchema)
    def get(self, model_id: str):
        record = registry.get_record(model_id)
        if record is None:
            raise ApiError(404, f"Model '{model_id}' not found", code="model_not_found", param="model_id")
        workers = current_app.extensions["liveness"].workers(model_id)
        return {**describe(record, workers), "request_id": g.request_id}
