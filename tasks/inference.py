"""Interactive inference tasks, consumed by model workers on ``model.<id>`` queues.

They are acknowledged on receipt (not ``acks_late``): a request whose worker
died is answered with an error by the waiting view, never replayed into a
second stream.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from celery import shared_task

from config.logs import request_id_var
from tasks.job_store import LINE_PRIORITY
from tasks.serving import serve_interactive

log = logging.getLogger(__name__)


DETACHED_THREADS = 64
"""Threads that follow batch lines through the engine, per worker (the batch pump keeps at most a model's batch
size + 2 lines in flight, so they are never all busy)."""
_detached = ThreadPoolExecutor(DETACHED_THREADS, thread_name_prefix="batch-line")


@shared_task(name="mlxf.infer", bind=True, ignore_result=True, acks_late=False)
def infer(self, operation: str, payload: dict[str, Any], priority: int = 0) -> None:
    """``priority``: the request's place in the engine (0, interactive; a batch line's is below every job's).

    A batch line is handed to the engine and followed on a thread of its own, and its pool thread is free at once:
    lines never take the threads an interactive request needs to reach the engine, where a line gives way to it
    (holding the pool's threads, they kept interactive requests waiting in the broker for a line to end). Nothing
    is lost by it: the task is acknowledged on receipt either way, and the pump sends a line again when the worker
    that had it dies."""
    request_id = request_id_var.get()
    if priority >= LINE_PRIORITY:
        _detached.submit(_serve_line, self.request.id, operation, payload, request_id, priority)
        return
    serve_interactive(self.request.id, operation, payload, request_id, priority)


def _serve_line(task_id: str, operation: str, payload: dict[str, Any], request_id: str, priority: int) -> None:
    request_id_var.set(request_id)
    try:
        serve_interactive(task_id, operation, payload, request_id, priority)
    except Exception:  # noqa: BLE001 - no pool thread reports it: the pump sees the line's missing answer
        log.exception("batch line %s failed", task_id)
