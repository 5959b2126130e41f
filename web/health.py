"""``GET /health`` (provider contract fields plus the specification's extension) and ``GET /v1/queue/stats``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import mongoengine as me
import redis
from flask import current_app, g, jsonify
from flask.views import MethodView
from pymongo.errors import PyMongoError

from models import registry
from models.liveness import last_answered_at, probe_verdict
from web.api import Blueprint, dispatcher
from web.models import live_status, serving_workers, worker_nodes
from web.schemas.operations import HealthSchema, QueueStatsSchema

blp = Blueprint("health", __name__, description="Health and queue statistics")


def redis_connected() -> bool:
    try:
        return bool(current_app.extensions["redis"].ping())
    except redis.RedisError:
        return False


def mongodb_connected() -> bool:
    try:
        me.get_db().client.admin.command("ping")
        return True
    except PyMongoError:
        return False


def probe_summary(workers: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
    """The freshest health probe among a model's workers: its verdict, age, duration and last error."""
    if not workers:
        return None
    max_age = current_app.extensions["settings"].health_probe_max_age_seconds
    freshest = max(workers, key=lambda w: last_answered_at(w) or 0.0)
    answered_at = last_answered_at(freshest)
    probed_at = freshest.get("probe_answered_at")
    return {
        "verdict": probe_verdict(freshest, now, max_age),
        "age_seconds": round(now - answered_at, 1) if answered_at else None,
        "answered_by": None if answered_at is None else "probe" if answered_at == probed_at else "request",
        "ms": freshest.get("probe_ms"),
        "error": freshest.get("probe_error"),
    }


def node_summaries(live: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each running node: where it runs, its budget, the models its live workers serve and the memory they hold."""
    nodes = current_app.extensions["nodes"].live()
    serving: dict[str, list[dict[str, Any]]] = {name: [] for name in nodes}
    for model_id, workers in live.items():
        for worker in workers:
            serving.setdefault(worker.get("node", ""), []).append({**worker, "model_id": model_id})
    now = time.time()
    return [
        {
            "name": name,
            "host": node.host,
            "backend": node.backend,
            "budget_gb": node.budget_gb or None,
            "held_gb": round(sum(w.get("memory_bytes", 0) for w in serving[name]) / 1e9, 3),
            "models_allowed": node.models,
            "models": sorted(w["model_id"] for w in serving[name]),
            "up_seconds": round(now - node.started_at, 1),
        }
        for name, node in nodes.items()
    ]


def health_report() -> tuple[dict[str, Any], bool]:
    """The health body and whether the platform can serve its default chat model."""
    started = time.perf_counter()
    settings = current_app.extensions["settings"]
    redis_ok = redis_connected()
    mongo_ok = mongodb_connected()
    live = current_app.extensions["liveness"].models() if redis_ok else {}
    # The control workers run RAG work and job events, and own the vector store.
    control = current_app.extensions["liveness"].processes("control") if redis_ok else []
    records = registry.list_records() if mongo_ok else []
    failed = [record.model_id for record in records if record.status == "failed"]
    default_workers = live.get(settings.default_chat_model, [])
    serving = serving_workers(default_workers)
    now = time.time()
    default_record = next((r for r in records if r.model_id == settings.default_chat_model), None)
    models = [
        {
            "id": record.model_id,
            "status": live_status(record, live.get(record.model_id, [])),
            "workers": len(live.get(record.model_id, [])),
            "warmup_completed": any(w.get("warmup_completed") for w in live.get(record.model_id, [])),
            "engine_stalled": any(w.get("stalled") for w in live.get(record.model_id, [])),
            "stalled_seconds": max((w.get("stalled_seconds", 0.0) for w in live.get(record.model_id, [])), default=0.0),
            "probe": probe_summary(live.get(record.model_id, []), now),
            "nodes": worker_nodes(live.get(record.model_id, [])),
            "error": record.error,
        }
        for record in records
    ]
    models_healthy = bool(serving)
    healthy = redis_ok and mongo_ok and models_healthy
    body = {
        "status": "ok" if healthy else "error",
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "model_id": settings.default_chat_model,
        "model_status": ("loaded" if serving else "unresponsive")
        if default_workers
        else (default_record.status if default_record else "missing"),
        "models_healthy": models_healthy,
        "warmup_enabled": settings.mlx_warmup,
        "warmup_completed": any(w.get("warmup_completed") for w in default_workers),
        "models": {"loaded_count": len(live), "models_healthy": models_healthy, "failed": failed, "models": models},
        "nodes": node_summaries(live) if redis_ok else [],
        "persistence": {
            "mongodb_connected": mongo_ok,
            "redis_connected": redis_ok,
            "vector_db_connected": any(c.get("vector_store_connected") for c in control),
        },
        "services": {"fusion_enabled": bool(control), "rag_enabled": bool(control), "mcp_enabled": bool(control)},
        "request_id": g.request_id,
    }
    body["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return body, healthy


@blp.route("/health")
class Health(MethodView):
    @blp.alt_response(200, schema=HealthSchema, description="Healthy")
    @blp.alt_response(503, schema=HealthSchema, description="Not healthy: the same body, status 'error'")
    def get(self):
        body, healthy = health_report()
        response = jsonify(body)
        response.status_code = 200 if healthy else 503
        return response


@blp.route("/v1/queue/stats")
class QueueStats(MethodView):
    @blp.alt_response(200, schema=QueueStatsSchema, description="Per model: workers, requests and queue depths")
    def get(self):
        settings = current_app.extensions["settings"]
        queues = {}
        for model_id, workers in current_app.extensions["liveness"].models().items():
            queues[model_id] = {
                "workers": len(workers),
                "active_requests": sum(w.get("active", 0) for w in workers),
                "queued_in_workers": sum(w.get("queued", 0) for w in workers),
                "pending_in_broker": dispatcher().queue_depth(model_id),
                "served": sum(w.get("served", 0) for w in workers),
                "batch_size": sum(w.get("batch_size", 0) for w in workers),
                "batch_peak": max((w.get("batch_peak", 0) for w in workers), default=0),
                "max_concurrency": sum(w.get("max_concurrency", settings.max_concurrency) for w in workers),
                "kv_bytes_per_token": max((w.get("kv_bytes_per_token", 0) for w in workers), default=0),
            }
        return jsonify({"queues": queues, "request_id": g.request_id})
