"""Announcing a stored job event to the control worker, which fans it out to webhooks and the callback URL.

The event itself is already in the job's outbox (``tasks.job_store``) when it
is announced; an announcement that fails is only late: the reconciler announces
every event that has not been fanned out again.
"""

from __future__ import annotations

import logging

from celery import current_app

from tasks.job_states import EVENTS

__all__ = ["EVENTS", "FAN_OUT_TASK", "announce"]

log = logging.getLogger(__name__)

FAN_OUT_TASK = "mlxf.fanout"


def announce(job_id: str, event_id: str) -> bool:
    """Asks the control worker to fan ``event_id`` out; False (and logged) when the broker could not take it."""
    try:
        current_app.send_task(FAN_OUT_TASK, args=[job_id, event_id], queue="webhooks")
    except Exception:  # noqa: BLE001 - the event is stored; the reconciler announces it again
        log.warning("could not announce %s of %s; the reconciler will", event_id, job_id, exc_info=True)
        return False
    return True
