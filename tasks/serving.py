"""The one serving runtime of a model worker process, and the function its Celery task calls."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from config.errors import ApiError
from config.settings import Settings
from models.engine import Engine
from models.stats import ModelStats
from tasks.progress import JobProgress
from tasks.replies import ReplyChannel

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    model_id: str
    model_type: str
    hostname: str
    engine: Engine
    redis: redis.Redis


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no model is loaded in this process")
    return _current


def serve_interactive(task_id: str, operation: str, payload: dict[str, Any], request_id: str) -> None:
    """Runs one OpenAI request on the engine and reports to the waiting web view over its reply channel."""
    runtime = current()
    channel = ReplyChannel(runtime.redis, task_id, runtime.settings.stream_maxlen, runtime.settings.stream_ttl_seconds)
    if channel.cancelled():
        log.info("%s %s cancelled before it started", operation, task_id)
        return
    channel.publish({"type": "started", "worker": runtime.hostname, "at": time.time()})
    if operation not in runtime.engine.handler.operations:
        error = ApiError(
            400,
            f"model {runtime.model_id!r} ({runtime.model_type}) cannot do {operation!r}",
            code="unsupported_operation",
            param="model",
        )
        channel.publish({"type": "error", "error": error.to_dict()})
        return
    started = time.perf_counter()
    future = runtime.engine.submit(operation, payload, channel.publish, channel.cancelled, request_id)
    try:
        result = future.result()
    except ApiError as exc:
        _record(runtime, started, 0, exc.message)
        channel.publish({"type": "error", "error": exc.to_dict()})
        return
    except Exception as exc:
        log.exception("%s %s failed", operation, task_id)
        error = ApiError(500, f"inference failed: {type(exc).__name__}: {exc}", code="inference_failed")
        _record(runtime, started, 0, error.message)
        channel.publish({"type": "error", "error": error.to_dict()})
        return
    _record(runtime, started, result.get("usage", {}).get("total_tokens", 0))
    channel.publish({"type": "done", "result": result})


def serve_job(job_id: str, operation: str, payload: dict[str, Any], request_id: str, priority: int) -> dict[str, Any]:
    """Runs one MCP job on the engine and returns its result; raises what the handler raised.

    The job's cancel flag (set by ``DELETE /api/mcp/jobs/{id}``) is checked
    between tokens; progress goes to Redis, never to MongoDB.
    """
    runtime = current()
    if operation not in runtime.engine.handler.operations:
        raise ApiError(
            400,
            f"model {runtime.model_id!r} ({runtime.model_type}) cannot do {operation!r}",
            code="unsupported_operation",
            param="operation",
        )
    cancel = ReplyChannel(runtime.redis, job_id, runtime.settings.stream_maxlen, runtime.settings.stream_ttl_seconds)
    progress = JobProgress(runtime.redis, job_id, payload.get("max_tokens"))
    started = time.perf_counter()
    future = runtime.engine.submit(
        operation, {**payload, "stream": True}, progress.on_event, cancel.cancelled, request_id, priority
    )
    try:
        result = future.result()
    except ApiError as exc:
        _record(runtime, started, 0, exc.message)
        raise
    except Exception as exc:
        _record(runtime, started, 0, f"{type(exc).__name__}: {exc}")
        raise
    _record(runtime, started, result.get("usage", {}).get("total_tokens", 0))
    return result


def _record(runtime: Runtime, started: float, tokens: int, error: str | None = None) -> None:
    try:
        ModelStats(runtime.redis).record(runtime.model_id, (time.perf_counter() - started) * 1000, tokens, error)
    except redis.RedisError:
        log.warning("could not record request statistics", exc_info=True)
