"""``GET /internal/diagnostics`` (specification 6.2): the system, its resources, models, queues, jobs, RAG
totals and recent errors in one body; 503 with the same body when Redis or MongoDB is unreachable."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psutil
from flask import current_app, g, jsonify
from flask.views import MethodView

from config.clock import iso, now
from models import registry
from rag import document_store
from tasks import job_store, reconciler
from tasks.job_states import STATUSES
from web.api import Blueprint, dispatcher
from web.health import mongodb_connected, redis_connected
from web.schemas.operations import DiagnosticsSchema

blp = Blueprint("diagnostics", __name__, url_prefix="/internal", description="Diagnostics")

GB = 1e9
DAY_SECONDS = 24 * 3600
RECENT_ERRORS = 20


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def system() -> dict[str, Any]:
    return {
        "platform": sys.platform,
        "platform_version": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": psutil.cpu_count(),
        "python_version": platform.python_version(),
        "mlx_version": _version("mlx"),
    }


def resources(models_bytes: int) -> dict[str, Any]:
    """Memory of the machine the API runs on; on Apple silicon MLX's memory is that memory (unified), so
    ``vram`` is what the loaded models hold of it and the budget set for them."""
    memory = psutil.virtual_memory()
    budget = current_app.extensions["settings"].model_memory_budget_gb
    return {
        "cpu_usage_percent": psutil.cpu_percent(interval=None),
        "memory_usage_gb": round((memory.total - memory.available) / GB, 2),
        "memory_total_gb": round(memory.total / GB, 2),
        "vram_usage_gb": round(models_bytes / GB, 3),
        "vram_total_gb": budget or round(memory.total / GB, 2),
    }


def models_and_queues(live: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, Any], dict[str, Any], int]:
    stats = current_app.extensions["stats"]
    settings = current_app.extensions["settings"]
    entries, queues, total = [], {}, 0
    for record in registry.list_records():
        workers = live.get(record.model_id, [])
        summary = stats.summary(record.model_id)
        memory = sum(w.get("memory_bytes", 0) for w in workers) or record.memory_bytes or 0
        total += memory if workers else 0
        entries.append(
            {
                "id": record.model_id,
                "status": "loaded" if workers else record.status,
                "vram_usage_gb": round(memory / GB, 3),
                "request_count": summary["request_count"],
                "avg_latency_ms": summary["avg_latency_ms"],
                "error_count": summary["error_count"],
            }
        )
        if workers:
            queues[record.model_id] = {
                "queue_size": dispatcher().queue_depth(record.model_id),
                "max_queue_size": settings.job_queue_limit,
                "active_requests": sum(w.get("active", 0) for w in workers),
                "max_concurrency": sum(w.get("max_concurrency", settings.max_concurrency) for w in workers),
            }
    loaded = sum(1 for entry in entries if entry["status"] == "loaded")
    models = {"loaded_count": loaded, "total_vram_usage_gb": round(total / GB, 3), "models": entries}
    return models, queues, total


@blp.route("/diagnostics")
class Diagnostics(MethodView):
    @blp.alt_response(200, schema=DiagnosticsSchema, description="The platform's state")
    @blp.alt_response(503, schema=DiagnosticsSchema, description="Redis or MongoDB unreachable: what could be read")
    def get(self):
        redis_ok, mongo_ok = redis_connected(), mongodb_connected()
        body: dict[str, Any] = {
            "timestamp": iso(now()),
            "uptime_seconds": round(time.time() - current_app.extensions["started_at"], 1),
            "system": system(),
            "persistence": {"mongodb_connected": mongo_ok, "redis_connected": redis_ok},
        }
        models_bytes = 0
        if mongo_ok and redis_ok:
            live = current_app.extensions["liveness"].models()
            body["models"], body["queues"], models_bytes = models_and_queues(live)
        if mongo_ok:
            counted = Counter(job_store.Job.objects.scalar("status"))  # one query: a job moving is counted once
            body["jobs"] = {status: counted.get(status, 0) for status in STATUSES}
            totals = document_store.totals()
            body["rag"] = {
                "collections": totals["collections"],
                "total_documents": totals["documents"],
                "total_chunks": totals["chunks"],
            }
        if redis_ok:
            errors = current_app.extensions["stats"].recent_errors(time.time() - DAY_SECONDS)
            body["errors"] = {"last_24h": len(errors), "recent_errors": errors[:RECENT_ERRORS]}
            ran = reconciler.last_run(current_app.extensions["redis"])
            body["reconciler"] = {
                "last_run_at": iso(datetime.fromtimestamp(ran, UTC)) if ran else None,
                "period_seconds": current_app.extensions["settings"].job_reconcile_seconds,
            }
        body["resources"] = resources(models_bytes)
        body["request_id"] = g.request_id
        response = jsonify(body)
        response.status_code = 200 if redis_ok and mongo_ok else 503
        return response
