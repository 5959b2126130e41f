"""``GET /api/fusion/capabilities``: which models can do what, from their type and context length."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from config.model_types import CAPABILITIES
from config.model_types import model_type as model_type_row
from models import registry
from web.api import Blueprint
from web.models import live_status, memory_gb
from web.schemas.operations import CapabilitiesSchema

blp = Blueprint("capabilities", __name__, url_prefix="/api/fusion", description="Model capability discovery")

LONG_CONTEXT_TOKENS = 32768


def capabilities_of(record: registry.ModelRecord) -> list[str]:
    """What a model can serve here; ``tool_calling`` is claimed by none until tool calls are implemented."""
    row = model_type_row(record.model_type)
    found = list(row.capabilities if row else ())
    if "chat" in found and (record.context_length or 0) >= LONG_CONTEXT_TOKENS:
        found.append("long_context")
    return found


class CapabilityQuerySchema(Schema):
    capability = fields.String(validate=validate.OneOf(CAPABILITIES))


@blp.route("/capabilities")
class Capabilities(MethodView):
    @blp.arguments(CapabilityQuerySchema, location="query")
    @blp.alt_response(200, schema=CapabilitiesSchema, description="Loaded models by capability, and every model")
    def get(self, query: dict[str, Any]):
        wanted = query.get("capability")
        live = current_app.extensions["liveness"].models()
        by_capability: dict[str, list[str]] = {c: [] for c in CAPABILITIES if wanted in (None, c)}
        models = []
        for record in registry.list_records():
            workers = live.get(record.model_id, [])
            found = capabilities_of(record)
            if wanted and wanted not in found:
                continue
            status = live_status(record, workers)
            if status == "loaded":
                for capability in found:
                    if capability in by_capability:
                        by_capability[capability].append(record.model_id)
            models.append(
                {
                    "id": record.model_id,
                    "capabilities": found,
                    "context_length": record.context_length,
                    "vram_usage_gb": memory_gb(record, workers),
                    "status": status,
                }
            )
        return {"capabilities": by_capability, "models": models, "request_id": g.request_id}
