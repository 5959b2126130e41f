"""Announcing a stored job event to the control worker, which fans it out to webhooks and the callback URL, and to
the job's watchers (``tasks.job_watch``: event streams and waiting reads), woken by a Redis message.

The event itself is already in the job's outbox (``tasks.job_store``) when it
is announced; an announcement that fails is only late: the reconciler announces
every event that has not been fanned out again.
"""

from __future__ import annotations

import logging
from functools import cache

import redis
from celery import current_app

from tasks.job_states import EVENTS

__all__ = ["EVENTS", "FAN_OUT_TASK", "announce", "channel"]

log = logging.getLogger(__name__)

FAN_OUT_TASK = "mlxf.fanout"
CHANNEL_PREFIX = "mlxf:job-events:"
WAKE_TIMEOUT_SECONDS = 2.0
"""Longest a move waits to wake the job's watchers (Redis stalled): they read the outbox again on their own."""


def channel(job_id: str) -> str:
    """The Redis channel on which the watchers of ``job_id`` hear of its new events."""
    return f"{CHANNEL_PREFIX}{job_id}"


def announce(job_id: str, event_id: str) -> bool:
    """Asks the control worker to fan ``event_id`` out; False (and logged) when the broker could not take it."""
    _wake_watchers(job_id, event_id)
    try:
        current_app.send_task(FAN_OUT_TASK, args=[job_id, event_id], queue="webhooks")
    except Exception:  # noqa: BLE001 - the event is stored; the reconciler announces it again
        log.warning("could not announce %s of %s; the reconciler will", event_id, job_id, exc_info=True)
        return False
    return True


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=WAKE_TIMEOUT_SECONDS, socket_connect_timeout=WAKE_TIMEOUT_SECONDS)


def _wake_watchers(job_id: str, event_id: str) -> None:
    """Publishes on the broker's Redis, which every process that moves jobs has; a failure only makes the watchers
    late (they read the outbox again after a quiet while)."""
    try:
        _redis(current_app.conf.broker_url).publish(channel(job_id), event_id)
    except Exception:  # noqa: BLE001 - the event is stored; watchers find it at their next read
        log.debug("could not wake the watchers of %s", job_id, exc_info=True)
