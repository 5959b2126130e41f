"""LoRA adapters of a language model (``/v1/models/{id}/adapters``): add, list, delete. A request names one as
``model: "<model id>:<adapter id>"``."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView

from tasks import adapters
from web.api import Blueprint, dispatcher
from web.schemas.adapters import AdapterListSchema, AdapterSchema, AddAdapterRequestSchema, DeletedAdapterSchema

blp = Blueprint("adapters", __name__, url_prefix="/v1", description="LoRA adapters chosen per request")


@blp.route("/models/<path:model_id>/adapters")
class Adapters(MethodView):
    @blp.response(200, AdapterListSchema)
    @blp.alt_response(400, description="The model is not a language model")
    @blp.alt_response(404, description="Model ID not found")
    def get(self, model_id: str):
        return {"object": "list", "data": adapters.listed(model_id), "request_id": g.request_id}

    @blp.arguments(AddAdapterRequestSchema)
    @blp.response(201, AdapterSchema)
    @blp.alt_response(
        400,
        description="adapter_path is no adapter folder under the model roots nor a repo id, or the adapter does not "
        "fit the model (another architecture, other dimensions, not LoRA), or the model is not a language model",
    )
    @blp.alt_response(404, description="Model ID not found")
    @blp.alt_response(409, description="The model has an adapter of that id already")
    @blp.alt_response(503, description="The model has no running worker to load the adapter")
    def post(self, body: dict[str, Any], model_id: str):
        added = adapters.register(dispatcher(), model_id, body["adapter_id"], body["adapter_path"], g.request_id)
        return {**added, "request_id": g.request_id}


@blp.route("/models/<path:model_id>/adapters/<adapter_id>")
class OneAdapter(MethodView):
    @blp.response(200, DeletedAdapterSchema)
    @blp.alt_response(404, description="Model ID or adapter not found")
    def delete(self, model_id: str, adapter_id: str):
        return {**adapters.unregister(dispatcher(), model_id, adapter_id, g.request_id), "request_id": g.request_id}
