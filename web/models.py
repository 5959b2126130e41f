"""Model management (spec section 2): list, look up, load, unload, info, stats and warm-up.

Model ids may contain ``/``, raw or percent-encoded.
"""

from __future__ import annotations

import time
from typing import Any

from flask import current_app, g
from flask.views import MethodView

from config.errors import ApiError
from models import registry
from models.catalog import ModelSpec, load_catalog
from models.lifecycle import ModelLifecycle
from models.liveness import SERVING_VERDICTS, probe_verdict
from models.stats import ModelStats
from tasks.adapters import SEPARATOR as ADAPTER_SEPARATOR
from web.api import Blueprint, dispatcher
from web.schemas.models import (
    LoadModelRequestSchema,
    LoadModelResponseSchema,
    ModelInfoSchema,
    ModelListSchema,
    ModelSchema,
    ModelStatsSchema,
    UnloadQuerySchema,
    UnloadResponseSchema,
    WarmupRequestSchema,
    WarmupResponseSchema,
)

blp = Blueprint("models", __name__, url_prefix="/v1", description="Models: list, load, unload, observe")

OWNER = "local-mlx"


def lifecycle() -> ModelLifecycle:
    return current_app.extensions["lifecycle"]


def stats() -> ModelStats:
    return current_app.extensions["stats"]


def live_workers(model_id: str) -> list[dict[str, Any]]:
    return current_app.extensions["liveness"].workers(model_id)


def find_record(model_id: str) -> registry.ModelRecord:
    record = registry.get_record(model_id)
    if record is None:
        raise ApiError(404, f"Model '{model_id}' not found", code="model_not_found", param="model_id")
    return record


def on_demand_models() -> list[ModelSpec]:
    return [spec for spec in load_catalog(current_app.extensions["settings"]).values() if spec.on_demand]


def available(spec: ModelSpec) -> dict[str, Any]:
    """The model object of an on-demand catalog model that is not loaded: the first request that names it loads it."""
    return {
        "id": spec.model_id,
        "object": "model",
        "created": 0,
        "owned_by": OWNER,
        "family": spec.family,
        "type": spec.model_type,
        "context_length": spec.context_length,
        "tags": list(dict.fromkeys(["local", *spec.tags, "on-demand"])),
        "tier": registry.TIER,
        "description": spec.description,
        "vram_usage_gb": 0.0,
        "status": "available",
        "workers": 0,
        "replicas": 0,
        "nodes": [],
        "error": None,
    }


def live_status(record: registry.ModelRecord, workers: list[dict[str, Any]]) -> str:
    """``loaded`` only while a worker is alive and answers its health probes (``models.liveness.probe_verdict``):
    ``unresponsive`` while its workers beat but do not answer; a loaded record without a worker is ``unavailable``."""
    if workers and record.status in ("loaded", "loading"):
        return "loaded" if serving_workers(workers) else "unresponsive"
    return "unavailable" if record.status == "loaded" else record.status


def serving_workers(workers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workers among ``workers`` (heartbeat reports) that answer their health probes, or are busy serving."""
    max_age = current_app.extensions["settings"].health_probe_max_age_seconds
    now = time.time()
    return [w for w in workers if probe_verdict(w, now, max_age) in SERVING_VERDICTS]


def memory_gb(record: registry.ModelRecord, workers: list[dict[str, Any]]) -> float:
    memory = max((w.get("memory_bytes", 0) for w in workers), default=record.memory_bytes or 0)
    return round(memory / 1e9, 3)


def describe(record: registry.ModelRecord, workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The OpenAI model object of ``record`` with the registry's metadata."""
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
        "vram_usage_gb": memory_gb(record, workers),
        "status": live_status(record, workers),
        "workers": len(workers),
        "replicas": record.replicas,
        "nodes": worker_nodes(workers),
        "error": record.error,
    }


def adapter_model(
    record: registry.ModelRecord, adapter: dict[str, Any], workers: list[dict[str, Any]]
) -> dict[str, Any]:
    """The model object of one of ``record``'s LoRA adapters: what a request names, with its base as ``parent``."""
    return {
        **describe(record, workers),
        "id": f"{record.model_id}{ADAPTER_SEPARATOR}{adapter['adapter_id']}",
        "created": adapter.get("created", 0),
        "description": f"LoRA adapter {adapter['adapter_id']!r} of {record.model_id} ({adapter['source']})",
        "vram_usage_gb": round(adapter.get("memory_bytes", 0) / 1e9, 3),
        "parent": record.model_id,
    }


def find_adapter_model(model_id: str) -> dict[str, Any] | None:
    """The model object of ``<model id>:<adapter id>``, if that model has that adapter."""
    base, _, adapter_id = model_id.rpartition(ADAPTER_SEPARATOR)
    record = registry.get_record(base) if base else None
    adapter = registry.adapter_of(record, adapter_id) if record is not None else None
    return adapter_model(record, adapter, live_workers(base)) if adapter is not None else None


def worker_nodes(workers: list[dict[str, Any]]) -> list[str]:
    """The node of each live worker (heartbeat reports), sorted."""
    return sorted(w.get("node", "") for w in workers)


@blp.route("/models")
class ModelList(MethodView):
    @blp.response(200, ModelListSchema)
    def get(self):
        live = current_app.extensions["liveness"].models()
        records = registry.list_records()
        data = [describe(record, live.get(record.model_id, [])) for record in records]
        data += [
            adapter_model(record, adapter, live.get(record.model_id, []))
            for record in records
            for adapter in record.adapters or []
        ]
        registered = {record.model_id for record in records}
        data += [available(spec) for spec in on_demand_models() if spec.model_id not in registered]
        return {"object": "list", "data": data, "request_id": g.request_id}


@blp.route("/models/load")
class ModelLoad(MethodView):
    @blp.arguments(LoadModelRequestSchema)
    @blp.response(200, LoadModelResponseSchema)
    @blp.alt_response(400, description="Invalid model_path or model_type, or the model failed to load")
    @blp.alt_response(409, description="Model ID already exists")
    @blp.alt_response(
        503,
        description="Insufficient memory on every node even after evicting idle models (insufficient_vram), no"
        " running node may serve the model (model_unavailable), or other placements held the nodes for longer than"
        " a load may take (service_unavailable)",
    )
    def post(self, body: dict[str, Any]):
        return {**lifecycle().load(**body), "request_id": g.request_id}


@blp.route("/models/<path:model_id>/unload")
class ModelUnload(MethodView):
    @blp.arguments(UnloadQuerySchema, location="query")
    @blp.response(200, UnloadResponseSchema)
    @blp.alt_response(404, description="Model ID not found")
    @blp.alt_response(409, description="Model is in use (unless force=true)")
    def delete(self, query: dict[str, Any], model_id: str):
        return {**lifecycle().unload(model_id, force=query["force"]), "request_id": g.request_id}


@blp.route("/models/<path:model_id>/info")
class ModelInfo(MethodView):
    @blp.response(200, ModelInfoSchema)
    def get(self, model_id: str):
        record = find_record(model_id)
        workers = live_workers(model_id)
        usage = stats().summary(model_id)
        return {
            "model_id": model_id,
            "status": live_status(record, workers),
            "metadata": record.metadata(),
            "vram_usage_gb": memory_gb(record, workers),
            "load_time": record.loaded_at.isoformat().replace("+00:00", "Z") if record.loaded_at else None,
            "last_used": usage["last_used"],
            "request_count": usage["request_count"],
            "workers": len(workers),
            "replicas": record.replicas,
            "nodes": worker_nodes(workers),
            "placed_on": list(record.nodes),
            "failed_on": [{"node": entry["node"], "error": entry["error"]} for entry in record.failed_on or []],
            "folders": list(record.folders or []),
            "error": record.error,
            "download": record.download or None,
            "request_id": g.request_id,
        }


@blp.route("/models/<path:model_id>/stats")
class ModelStatistics(MethodView):
    @blp.response(200, ModelStatsSchema)
    def get(self, model_id: str):
        record = find_record(model_id)
        workers = live_workers(model_id)
        return {
            "model_id": model_id,
            **stats().summary(model_id),
            "vram_usage_gb": memory_gb(record, workers),
            "workers": [
                {"node": w.get("node", ""), "pid": w.get("pid", 0), "resident_memory_bytes": w.get("rss_bytes")}
                for w in sorted(workers, key=lambda w: (w.get("node", ""), w.get("pid", 0)))
            ],
            "request_id": g.request_id,
        }


@blp.route("/models/<path:model_id>/warmup")
class ModelWarmup(MethodView):
    @blp.arguments(WarmupRequestSchema)
    @blp.response(200, WarmupResponseSchema)
    def post(self, body: dict[str, Any], model_id: str):
        find_record(model_id)
        started = time.monotonic()
        call = dispatcher().start(model_id, "warmup", body, g.request_id)
        result = dispatcher().result(call)
        return {
            "model_id": model_id,
            "status": "warmed",
            "prompt_tokens": result["prompt_tokens"],
            "warmup_time_ms": round((time.monotonic() - started) * 1000, 1),
            "request_id": g.request_id,
        }


@blp.route("/models/<path:model_id>")
class ModelDetail(MethodView):
    @blp.response(200, ModelSchema)
    def get(self, model_id: str):
        record = registry.get_record(model_id)
        if record is None:
            spec = next((spec for spec in on_demand_models() if spec.model_id == model_id), None)
            if spec is not None:
                return {**available(spec), "request_id": g.request_id}
            adapter = find_adapter_model(model_id)
            if adapter is not None:
                return {**adapter, "request_id": g.request_id}
        record = record or find_record(model_id)
        return {**describe(record, live_workers(model_id)), "request_id": g.request_id}
