"""Job events (job.queued, job.processing, job.completed, job.failed, job.cancelled) handed to the webhooks queue.

The payload is a snapshot of the job taken when the transition happened; the
control worker fans it out to subscribed webhooks and the job's callback URL.
"""

from __future__ import annotations

import logging

from celery import current_app

from tasks.job_store import Job, iso, now

log = logging.getLogger(__name__)

EVENTS = ("job.queued", "job.processing", "job.completed", "job.failed", "job.cancelled")
FAN_OUT_TASK = "mlxf.fanout"


def event_id(event: str, job: Job) -> str:
    """Unique per event of a job; queued and processing repeat when a job is run again, so they carry the run."""
    repeatable = event in ("job.queued", "job.processing")
    return f"{job.job_id}.{event}" + (f".{job.attempts}" if repeatable else "")


def publish(event: str, job: Job) -> None:
    payload = {"event": event, "timestamp": iso(now()), "job": job.public()}
    try:
        current_app.send_task(FAN_OUT_TASK, args=[event_id(event, job), payload], queue="webhooks")
    except Exception:  # noqa: BLE001 - the transition stands; a lost event is logged, not raised to the caller
        log.exception("could not publish %s for %s", event, job.job_id)
