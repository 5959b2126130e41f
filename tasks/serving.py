"""The glue between a model worker's Celery tasks and its engine: the worker's runtime, and what the tasks call.

A task hands its request to the engine thread and waits for the answer, never
longer than the request's or the job's deadline; past it the request is
abandoned (the engine drops it at its next checkpoint) and the caller gets a
504. Running jobs are listed with their claim tokens so that the worker's
heartbeat renews their leases while the engine makes progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import redis

from config.errors import ApiError
from config.model_types import LOAD_ADAPTER, operations_of
from config.settings import Settings
from models.engine import Engine, RequestCancelled
from models.stats import ModelStats
from tasks.image_inputs import has_images, with_images
from tasks.progress import JobProgress
from tasks.redis_relay import RedisRelay
from tasks.replies import ReplyChannel

log = logging.getLogger(__name__)


@dataclass
class ProbeRecord:
    """What the worker's last probes gave (wall-clock times, as the heartbeat reports them)."""

    answered_at: float | None = None
    ms: float | None = None
    error: str | None = None
    in_flight: bool = False
    """A probe is in the engine now: it counts in the engine's requests, but no one is waiting on it."""

    def report(self) -> dict[str, Any]:
        return {
            "probe_answered_at": self.answered_at,
            "probe_ms": self.ms,
            "probe_error": self.error,
            "probe_in_flight": self.in_flight,
        }


@dataclass
class Runtime:
    settings: Settings
    model_id: str
    model_type: str
    hostname: str
    engine: Engine
    redis: redis.Redis
    batch_size: int = 1
    """Requests the engine batches together (the model's ``max_concurrency``)."""
    relay: RedisRelay | None = None
    """The worker's path to Redis for per-token traffic (``tasks.redis_relay``)."""
    leases: dict[str, str] = field(default_factory=dict)
    """Job id -> claim token of every job this worker has taken and not finished."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    started_at: float = field(default_factory=time.time)
    """When the worker started serving (wall clock): its first probe is due soon after."""
    probe: ProbeRecord = field(default_factory=ProbeRecord)
    """The worker's health probes (``tasks.probes``)."""

    def running_jobs(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.leases.items())


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no model is loaded in this process")
    return _current


class FirstToken:
    """Passes events on and notes when the first text delta went out (time to first token, for ``/metrics``)."""

    def __init__(self, emit: Callable[[dict[str, Any]], Any], started: float) -> None:
        self._emit = emit
        self.started = started
        self.ms: float | None = None

    def emit(self, event: dict[str, Any]) -> None:
        if self.ms is None and event.get("type") == "delta":
            self.ms = (time.perf_counter() - self.started) * 1000
        self._emit(event)


def _check_operation(runtime: Runtime, operation: str, param: str) -> None:
    if operation not in operations_of(runtime.model_type):
        raise ApiError(
            400,
            f"model {runtime.model_id!r} ({runtime.model_type}) cannot do {operation!r}",
            code="unsupported_operation",
            param=param,
        )


def _cancel_check(cancelled: Callable[[], bool], abandoned: threading.Event) -> Callable[[], bool]:
    """True once the request is cancelled (by its client) or abandoned (its waiter gave up)."""
    return lambda: abandoned.is_set() or cancelled()


def _wait(future: Any, seconds: float, abandoned: threading.Event, what: str) -> dict[str, Any]:
    try:
        return future.result(timeout=seconds)
    except FutureTimeout:
        abandoned.set()
        raise ApiError(504, f"The {what} did not finish within {seconds:g}s", code="timeout") from None


def serve_interactive(
    task_id: str, operation: str, payload: dict[str, Any], request_id: str, priority: int = 0
) -> None:
    """Runs one OpenAI request on the engine and reports to the waiting web view over its reply channel.

    Its events go through the worker's relay (the engine thread never waits on Redis); the task ends once
    Redis has the last event, or the request's timeout has passed (the relay writes it when Redis answers)."""
    runtime = current()
    settings = runtime.settings
    channel = ReplyChannel(
        runtime.redis, task_id, settings.stream_maxlen, settings.stream_ttl_seconds, relay=runtime.relay
    )
    if channel.cancelled():
        log.info("%s %s cancelled before it started", operation, task_id)
        return
    with channel:
        channel.publish({"type": "started", "worker": runtime.hostname, "at": time.time()})
        last = _run_interactive(runtime, channel, operation, payload, request_id, priority)
        if last is not None:
            channel.publish(last, wait_seconds=settings.request_timeout_seconds)


def _run_interactive(
    runtime: Runtime, channel: ReplyChannel, operation: str, payload: dict[str, Any], request_id: str, priority: int = 0
) -> dict[str, Any] | None:
    """The request's last event: ``done`` with its result, or ``error``; None when it was cancelled."""
    started = time.perf_counter()
    abandoned = threading.Event()
    try:
        _check_operation(runtime, operation, "model")
        stop = _cancel_check(channel.cancelled, abandoned)
        ensure_adapter(runtime, payload, request_id, abandoned)
        first_token = FirstToken(channel.publish, started)
        future = runtime.engine.submit(operation, payload, first_token.emit, stop, request_id, priority)
        result = _wait(future, runtime.settings.request_timeout_seconds, abandoned, "request")
    except RequestCancelled:
        log.info("%s %s cancelled before it started", operation, channel.task_id)
        return None
    except ApiError as exc:
        _record(runtime, started, 0, exc.message)
        return {"type": "error", "error": exc.to_dict()}
    except Exception as exc:
        log.exception("%s %s failed", operation, channel.task_id)
        error = ApiError(500, f"inference failed: {type(exc).__name__}: {exc}", code="inference_failed")
        _record(runtime, started, 0, error.message)
        return {"type": "error", "error": error.to_dict()}
    usage = result.get("usage", {})
    _record(
        runtime,
        started,
        usage.get("total_tokens", 0),
        usage=usage,
        first_token_ms=first_token.ms,
        cache_tier=result.pop("cache_tier", None),
    )
    return {"type": "done", "result": result}


def ensure_adapter(runtime: Runtime, payload: dict[str, Any], request_id: str, abandoned: threading.Event) -> None:
    """Loads the LoRA adapter a request names (``tasks.adapters.route`` put it in the payload) when this worker has
    not loaded it from that source yet: a replica, or a worker restarted since it was added."""
    adapter_id = payload.get("adapter")
    if adapter_id is None:
        return
    loaded = getattr(runtime.engine.handler, "adapters", None)
    known = loaded.get(adapter_id) if loaded is not None else None
    if known is not None and known.source == payload.get("adapter_source"):
        return
    load = {"adapter_id": adapter_id, "source": payload.get("adapter_source", "")}
    future = runtime.engine.submit(LOAD_ADAPTER, load, lambda _event: None, abandoned.is_set, request_id)
    _wait(future, runtime.settings.request_timeout_seconds, abandoned, "adapter's load")


def serve_job(
    job_id: str, token: str, operation: str, payload: dict[str, Any], request_id: str, priority: int
) -> dict[str, Any]:
    """Runs one MCP job on the engine and returns its result; raises what the handler raised.

    The job's cancel flag (set by ``DELETE /api/mcp/jobs/{id}``) is checked
    between tokens; progress goes to Redis, never to MongoDB; its lease is
    renewed by the heartbeat while it is listed here.
    """
    runtime = current()
    _check_operation(runtime, operation, "operation")
    if operation == "chat" and has_images(payload.get("messages") or []):
        # An interactive request's images are fetched by the web process before it is queued; a job's only here.
        payload = {**payload, "messages": with_images(payload["messages"], runtime.settings)}
    cancel = ReplyChannel(
        runtime.redis, job_id, runtime.settings.stream_maxlen, runtime.settings.stream_ttl_seconds, relay=runtime.relay
    )
    progress = JobProgress(runtime.redis, job_id, payload.get("max_tokens"), relay=runtime.relay)
    abandoned = threading.Event()
    started = time.perf_counter()
    with runtime.lock:
        runtime.leases[job_id] = token
    with cancel:
        try:
            stop = _cancel_check(cancel.cancelled, abandoned)
            future = runtime.engine.submit(
                operation,
                {**payload, "stream": True},
                progress.on_event,
                stop,
                request_id,
                priority,
            )
            result = _wait(future, runtime.settings.job_timeout_seconds, abandoned, "job")
        except RequestCancelled:
            return {"finish_reason": "cancelled"}
        except ApiError as exc:
            _record(runtime, started, 0, exc.message)
            if exc.code == "timeout":
                raise ApiError(504, exc.message, code="job_timeout") from None
            raise
        except Exception as exc:
            _record(runtime, started, 0, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            with runtime.lock:
                runtime.leases.pop(job_id, None)
    usage = result.get("usage", {})
    _record(runtime, started, usage.get("total_tokens", 0), usage=usage, cache_tier=result.pop("cache_tier", None))
    return result


def _record(
    runtime: Runtime,
    started: float,
    tokens: int,
    error: str | None = None,
    usage: dict[str, Any] | None = None,
    first_token_ms: float | None = None,
    cache_tier: str | None = None,
) -> None:
    try:
        ModelStats(runtime.redis).record(
            runtime.model_id, (time.perf_counter() - started) * 1000, tokens, error, usage, first_token_ms, cache_tier
        )
    except redis.RedisError:
        log.warning("could not record request statistics", exc_info=True)
