"""Watching one job: its stored events as they are recorded, read from its outbox when an announcement on Redis
wakes the watcher (``tasks.job_events.announce`` publishes one per event), never by polling MongoDB in a loop.

An announcement carries no state: the outbox (``tasks.job_store``) is the truth and is read again on every
wake-up, and also after ``quiet_seconds`` without any, so a lost announcement only makes a watcher late.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from config.clock import iso
from tasks import job_store
from tasks.job_events import channel
from tasks.job_states import FINISHED

log = logging.getLogger(__name__)

FINAL_EVENT = "job.final"
"""The last event of a job's stream: the job as ``GET /api/mcp/jobs/{id}`` shows it once it has finished."""


def final_event_id(job_id: str) -> str:
    return f"{job_id}.final"


class JobWatch:
    """A subscription to one job's announcements; made before the job is read, so no event falls between."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel(job_id))

    def wait(self, seconds: float) -> bool:
        """Waits up to ``seconds`` for an announcement (taking every one already there); whether one came."""
        deadline = time.monotonic() + max(seconds, 0.0)
        while True:
            message = self._pubsub.get_message(timeout=max(deadline - time.monotonic(), 0.0))
            if message is not None:
                while self._pubsub.get_message(timeout=0) is not None:
                    pass
                return True
            if time.monotonic() >= deadline:
                return False

    def close(self) -> None:
        try:
            self._pubsub.close()
        except Exception:  # noqa: BLE001 - the connection is dropped either way
            log.debug("could not close a job subscription", exc_info=True)


@contextmanager
def watching(client: redis.Redis, job_id: str) -> Iterator[JobWatch]:
    watch = JobWatch(client, job_id)
    try:
        yield watch
    finally:
        watch.close()


def event_view(entry: dict[str, Any]) -> dict[str, Any]:
    """A stored event as a stream shows it: the webhook payload's fields (no result) and the event's id."""
    return {"event_id": entry["event_id"], "event": entry["event"], "timestamp": iso(entry["at"]), "job": entry["job"]}


def events_after(job: job_store.Job, last_event_id: str | None) -> list[dict[str, Any]]:
    """The job's stored events after ``last_event_id`` in the order they were recorded (all of them when it is
    None or not one of this job's)."""
    entries = [dict(entry) for entry in job.outbox]
    ids = [entry.get("event_id") for entry in entries]
    start = ids.index(last_event_id) + 1 if last_event_id in ids else 0
    return entries[start:]


def events(
    client: redis.Redis, job_id: str, sees: str | None, last_event_id: str | None, quiet_seconds: float
) -> Iterator[dict[str, Any] | None]:
    """Every event of the job after ``last_event_id``, then new ones as they are recorded, then the final state
    (``FINAL_EVENT``, with the result) once the job has finished; ``None`` after each ``quiet_seconds`` without
    any (a keep-alive). Ends at once after ``final_event_id``, or when the job is gone."""
    if last_event_id == final_event_id(job_id):
        return
    with watching(client, job_id) as watch:
        sent = last_event_id
        while True:
            job = job_store.get(job_id, sees)
            if job is None:
                return
            for entry in events_after(job, sent):
                yield event_view(entry)
                sent = entry["event_id"]
            if job.status in FINISHED:
                yield {"event_id": final_event_id(job_id), "event": FINAL_EVENT, "job": job.public()}
                return
            if not watch.wait(quiet_seconds):
                yield None


def wait_for_change(client: redis.Redis, job_id: str, sees: str | None, seconds: float, slice_seconds: float) -> None:
    """Returns as soon as an event of the job is recorded after the call began, or after ``seconds``; at once for a
    finished (or unknown) job. The outbox is read again on each announcement and every ``slice_seconds``."""
    deadline = time.monotonic() + seconds
    with watching(client, job_id) as watch:
        job = job_store.get(job_id, sees)
        if job is None or job.status in FINISHED:
            return
        seen = len(job.outbox)
        while (left := deadline - time.monotonic()) > 0:
            watch.wait(min(left, slice_seconds))
            job = job_store.get(job_id, sees)
            if job is None or len(job.outbox) != seen:
                return
