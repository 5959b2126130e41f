"""Interactive inference tasks, consumed by model workers on ``model.<id>`` queues.

They are acknowledged on receipt (not ``acks_late``): a request whose worker
died is answered with an error by the waiting view, never replayed into a
second stream.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from config.logs import request_id_var
from tasks.serving import serve_interactive


@shared_task(name="mlxf.infer", bind=True, ignore_result=True, acks_late=False)
def infer(self, operation: str, payload: dict[str, Any], priority: int = 0) -> None:
    """``priority``: the request's place in the engine (0, interactive; a batch line's is below every job's)."""
    serve_interactive(self.request.id, operation, payload, request_id_var.get(), priority)
