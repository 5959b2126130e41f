"""A job's events as server-sent events (``GET /api/mcp/jobs/{id}/events``), each with its ``id:`` so a client
resumes with ``Last-Event-ID``; the stream ends with the job's final state (``event: job.final``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import redis
from flask import Response

from config.errors import ApiError
from tasks import job_watch
from web.errors import internal_error, unreachable_error
from web.sse import KEEPALIVE

log = logging.getLogger(__name__)

QUIET_SECONDS = 5.0
"""A keep-alive after this long without an event (a client that left is noticed), and a read of the outbox in
case an announcement was lost."""


def _frame(event: dict[str, Any]) -> str:
    return f"id: {event['event_id']}\nevent: {event['event']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def event_stream(client: redis.Redis, job_id: str, sees: str | None, last_event_id: str | None) -> Response:
    """The stream of the job's events after ``last_event_id``; 204 (nothing more to send: an ``EventSource`` stops
    reconnecting) for a client that already has the final state."""
    if last_event_id == job_watch.final_event_id(job_id):
        return Response(status=204)
    events = job_watch.events(client, job_id, sees, last_event_id, QUIET_SECONDS)

    def frames() -> Iterator[str]:
        try:
            for event in events:
                yield KEEPALIVE if event is None else _frame(event)
        except Exception as exc:  # noqa: BLE001 - a failure ends the stream with an error event, never a cut
            error = exc if isinstance(exc, ApiError) else unreachable_error(exc)
            if error is None:
                log.exception("the events of %s failed", job_id)
                error = internal_error()
            yield f"event: error\ndata: {json.dumps(error.envelope(), separators=(',', ':'))}\n\n"
        finally:
            events.close()

    return Response(
        frames(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
