"""Hands requests to model workers (and RAG tasks to the control worker) through Celery and waits for their
events over Redis.

The caller only enqueues and waits: it never loads a model. A request ends with
an error, never a hang, when its model has no worker (503), its worker dies
mid-request (503), or its deadline passes (504, and the task is revoked). A
control task proves it is alive by its events: one silent for
the setting ``CONTROL_SILENCE_SECONDS`` after it started is taken as lost.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from config.errors import ApiError
from config.model_types import operations_of
from config.settings import Settings
from models import registry
from models.catalog import load_catalog
from models.liveness import Liveness
from tasks import adapters, broker
from tasks.celery_app import model_queue
from tasks.replies import ReplyChannel

_POLL_MS = 500
ALIVE = "alive"
"""The event a control task sends while it works, so that its waiter can tell it from a dead one."""
IDLE = {"type": "idle"}
"""Yielded by a streaming call's events when the worker sent nothing for a poll interval."""


@dataclass
class Call:
    """One request in flight on a model worker."""

    task_id: str
    model_id: str | None
    """None for a control task (RAG), which has no model worker to watch."""
    channel: ReplyChannel
    deadline: float
    refresh_seconds: float | None
    worker: str | None = None
    cursor: str = "0"
    finished: bool = False
    last_event: float | None = None


class Dispatcher:
    def __init__(self, settings: Settings, celery: Celery, client: redis.Redis, liveness: Liveness) -> None:
        self.settings = settings
        self.celery = celery
        self.redis = client
        self.liveness = liveness
        self.on_demand: Callable[[str, float], bool] | None = None
        """Loads an on-demand model a request names and waits for it (until the deadline, monotonic); False for a
        model that is not one (``ModelLifecycle.load_on_demand``, set by the web app)."""

    def require_model(self, model_id: str, operation: str, param: str = "model") -> None:
        """Raises the 404 of an unknown model, the 503 of one without a worker, the 400 of a wrong type; an
        on-demand model without a worker is loaded first (the request waits, within its deadline)."""
        workers = self.liveness.workers(model_id)
        if not workers and self.on_demand is not None:
            deadline = time.monotonic() + self.settings.request_timeout_seconds
            if self.on_demand(model_id, deadline):
                workers = self.liveness.workers(model_id)
        if not workers:
            record = registry.get_record(model_id)
            if record is None:
                raise ApiError(404, f"Model '{model_id}' not found", code="model_not_found", param=param)
            reason = f" (last error: {record.error})" if record.status == "failed" and record.error else ""
            raise ApiError(
                503,
                f"Model '{model_id}' has no running worker; its status is {record.status}{reason}",
                code="model_unavailable",
                param=param,
            )
        model_type = workers[0].get("model_type", "")
        if operation not in operations_of(model_type):
            raise ApiError(
                400,
                f"Model '{model_id}' is a {model_type} model and cannot serve {operation} requests",
                code="unsupported_operation",
                param=param,
            )

    def model_type(self, model_id: str) -> str | None:
        """The type of a model with a running worker, else None."""
        workers = self.liveness.workers(model_id)
        return workers[0].get("model_type") if workers else None

    def pick_model(self, operation: str, param: str, model_type: str | None = None) -> str:
        """The first model (by id) with a running worker that serves ``operation`` (and is a ``model_type`` model,
        when given): the "auto-select" default; failing that, where this process loads models on demand, the first
        such on-demand catalog model (the request then loads it)."""
        for model_id, reports in sorted(self.liveness.models().items()):
            served_type = reports[0].get("model_type", "")
            if operation in operations_of(served_type) and model_type in (None, served_type):
                return model_id
        if self.on_demand is not None:
            for model_id, spec in sorted(load_catalog(self.settings).items()):
                if (
                    spec.on_demand
                    and operation in operations_of(spec.model_type)
                    and model_type in (None, spec.model_type)
                ):
                    return model_id
        kind = f"{model_type} model" if model_type else "running model"
        raise ApiError(
            503, f"No {kind} can serve {operation} requests; load one", code="model_unavailable", param=param
        )

    def start(
        self, model_id: str, operation: str, payload: dict[str, Any], request_id: str, streaming: bool = False
    ) -> Call:
        """Sends the request to a worker of ``model_id`` (``<model id>:<adapter id>``: of the model, with the
        adapter)."""
        if adapters.SEPARATOR in model_id:
            known = bool(self.liveness.workers(model_id)) or registry.get_record(model_id) is not None
            model_id, payload = adapters.route(model_id, operation, payload, known)
        self.require_model(model_id, operation)
        task_id = f"task-{uuid.uuid4().hex}"
        timeout = self.settings.request_timeout_seconds
        channel = ReplyChannel(self.redis, task_id, self.settings.stream_maxlen, self.settings.stream_ttl_seconds)
        self.celery.send_task(
            "mlxf.infer",
            args=[operation, payload],
            task_id=task_id,
            queue=model_queue(model_id),
            headers={"request_id": request_id},
            expires=timeout,
        )
        return Call(task_id, model_id, channel, time.monotonic() + timeout, timeout if streaming else None)

    def start_control(
        self, task_name: str, args: list[Any], queue: str, request_id: str, timeout: float | None = None
    ) -> Call:
        """Sends a control task (RAG work on ``queue``) that answers on its reply channel as model tasks do."""
        task_id = f"task-{uuid.uuid4().hex}"
        timeout = timeout or self.settings.request_timeout_seconds
        channel = ReplyChannel(self.redis, task_id, self.settings.stream_maxlen, self.settings.stream_ttl_seconds)
        self.celery.send_task(
            task_name, args=args, task_id=task_id, queue=queue, headers={"request_id": request_id}, expires=timeout
        )
        return Call(task_id, None, channel, time.monotonic() + timeout, None)

    def events(self, call: Call) -> Iterator[dict[str, Any]]:
        """The worker's delta and done events; raises ``ApiError`` on error, deadline or a dead worker.

        Closing the iterator before ``done`` (a client that went away) cancels the generation.
        """
        try:
            while True:
                remaining = call.deadline - time.monotonic()
                if remaining <= 0:
                    raise ApiError(
                        504,
                        f"The model did not answer within {self.settings.request_timeout_seconds:g}s",
                        code="timeout",
                    )
                batch = call.channel.read(call.cursor, block_ms=max(1, min(_POLL_MS, int(remaining * 1000))))
                if not batch:
                    self._check_worker(call)
                    if call.refresh_seconds is not None:
                        yield IDLE  # lets a stream write something, so that a client that left is noticed
                    continue
                call.last_event = time.monotonic()
                for entry_id, event in batch:
                    call.cursor = entry_id
                    if call.refresh_seconds is not None:
                        call.deadline = time.monotonic() + call.refresh_seconds
                    kind = event.get("type")
                    if kind == ALIVE:
                        continue
                    if kind == "started":
                        call.worker = event.get("worker")
                    elif kind == "error":
                        call.finished = True
                        raise ApiError.from_dict(event["error"])
                    elif kind == "done":
                        call.finished = True
                        yield event
                        return
                    else:
                        yield event
        finally:
            if not call.finished:
                self.abandon(call)
            else:
                call.channel.discard()

    def result(self, call: Call) -> dict[str, Any]:
        for event in self.events(call):
            if event.get("type") == "done":
                return event["result"]
        raise ApiError(500, "the worker ended without a result", code="internal_error")

    def abandon(self, call: Call) -> None:
        """Stops the request wherever it is: the cancel flag for a running one, revoke for a queued one."""
        call.finished = True
        call.channel.cancel()
        self.celery.control.revoke(call.task_id)

    def _check_worker(self, call: Call) -> None:
        if call.model_id is None:
            silent = time.monotonic() - (call.last_event or time.monotonic())
            if call.worker is not None and silent > self.settings.control_silence_seconds:
                raise ApiError(
                    503, f"The worker running this request ({call.worker}) stopped answering", code="worker_lost"
                )
            return
        if call.worker is not None:
            if not self.liveness.is_alive(call.worker):
                raise ApiError(
                    503, f"The worker serving model '{call.model_id}' stopped during this request", code="worker_lost"
                )
        elif not self.liveness.workers(call.model_id):
            raise ApiError(
                503,
                f"Model '{call.model_id}' lost its last worker before this request started",
                code="model_unavailable",
                param="model",
            )

    def queue_depth(self, model_id: str) -> int:
        """Requests waiting in the broker for ``model_id``'s workers, all priorities."""
        return broker.waiting_count(self.celery, model_queue(model_id))
