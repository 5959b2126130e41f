"""Brings MongoDB's job and delivery records and the broker back in line after a process or Redis died.

Run periodically by the control worker (``mlxf.reconcile``):
- a job ``processing`` on a worker that stopped beating (on two consecutive
  looks) is queued and sent again, or failed once it has had its attempts;
- a job ``queued`` in MongoDB whose message the broker no longer holds (Redis
  restarted without persistence) or that a dead worker had taken is sent again;
- a job ``queued`` for a model that has since been unloaded fails with that reason;
- a pending webhook delivery whose retry task was lost is sent again.
Every step is a compare-and-set, so two reconcilers, or a reconciler racing a
worker, move each record once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from celery import Celery

from config.settings import Settings
from models import registry
from models.liveness import Liveness
from tasks import broker, job_store, webhooks
from tasks.celery_app import model_queue
from tasks.job_events import publish
from tasks.job_queue import enqueue

log = logging.getLogger(__name__)

DELIVER_TASK = "mlxf.deliver"


@dataclass
class Reconciler:
    settings: Settings
    celery: Celery
    redis: redis.Redis
    liveness: Liveness
    suspects: set[str] = field(default_factory=set)
    """Jobs whose worker looked dead at the previous look."""
    held: set[str] | None = None
    """Task ids live workers said they hold, asked at most once per run."""

    def run(self) -> dict[str, int]:
        counts = {"requeued": 0, "failed": 0, "resent": 0, "deliveries": 0}
        self.held = None
        self.rescue_orphaned_jobs(counts)
        self.resend_lost_jobs(counts)
        self.resend_lost_deliveries(counts)
        if any(counts.values()):
            log.info("reconciled: %s", counts)
        return counts

    def rescue_orphaned_jobs(self, counts: dict[str, int]) -> None:
        suspects = set()
        for job in job_store.processing():
            if job.worker and self.liveness.is_alive(job.worker):
                continue
            if job.job_id not in self.suspects:
                suspects.add(job.job_id)
                continue
            if job.job_id in self._held_by_live_workers():
                continue  # its worker is slow to beat, not dead
            reason = f"the worker running it ({job.worker}) stopped"
            if job.attempts >= self.settings.job_max_attempts:
                message = f"Job abandoned: {reason}, and it has had {job.attempts} attempts"
                if job_store.fail(job.job_id, job.claim, message, "worker_lost"):
                    counts["failed"] += 1
                    publish("job.failed", job_store.get(job.job_id))
            elif job_store.requeue(job.job_id, job.claim):
                log.warning("job %s: %s; queued again (attempt %d done)", job.job_id, reason, job.attempts)
                fresh = job_store.get(job.job_id)
                self._forget_unacked(job.job_id)
                enqueue(self.celery, fresh)
                counts["requeued"] += 1
                publish("job.queued", fresh)
        self.suspects = suspects

    def resend_lost_jobs(self, counts: dict[str, int]) -> None:
        grace = self.settings.job_lost_grace_seconds
        stale = job_store.stale_queued(job_store.now() - timedelta(seconds=grace))
        if not stale:
            return
        unacked = broker.unacked(self.redis)
        waiting: dict[str, set[str]] = {}
        for job in stale:
            if self._fail_if_model_gone(job):
                counts["failed"] += 1
                continue
            queue = model_queue(job.model_id)
            if queue not in waiting:
                waiting[queue] = broker.waiting_task_ids(self.redis, queue)
            if job.job_id in waiting[queue]:
                continue
            if job.job_id in unacked:
                tag, delivered_at = unacked[job.job_id]
                if time.time() - delivered_at < grace:
                    continue
                if job.job_id in self._held_by_live_workers():
                    continue
                broker.drop_unacked(self.redis, tag)
            if job_store.touch_enqueued(job.job_id):
                log.warning("job %s was queued but no broker message held it; sent again", job.job_id)
                enqueue(self.celery, job)
                counts["resent"] += 1

    def _fail_if_model_gone(self, job: job_store.Job) -> bool:
        record = registry.get_record(job.model_id)
        if record is not None and record.desired == "loaded":
            return False
        message = f"Model '{job.model_id}' was unloaded before the job could run"
        if not job_store.fail(job.job_id, None, message, "model_unloaded"):
            return False
        broker.remove_waiting(self.redis, model_queue(job.model_id), job.job_id)
        publish("job.failed", job_store.get(job.job_id))
        return True

    def resend_lost_deliveries(self, counts: dict[str, int]) -> None:
        grace = max(self.settings.job_lost_grace_seconds, 2 * self.settings.webhook_timeout_seconds)
        for delivery in webhooks.overdue(job_store.now() - timedelta(seconds=grace)):
            if delivery.attempt_count >= self.settings.webhook_max_attempts:
                webhooks.give_up(delivery.delivery_id, delivery.attempt_count)
                continue
            self.celery.send_task(
                DELIVER_TASK, args=[delivery.delivery_id, delivery.attempt_count + 1], queue="webhooks"
            )
            counts["deliveries"] += 1

    def _held_by_live_workers(self) -> set[str]:
        """Ids of the tasks live workers hold (reserved or running), by asking them; empty if none answers."""
        if self.held is not None:
            return self.held
        inspector = self.celery.control.inspect(timeout=1.0)
        ids: set[str] = set()
        for answer in (inspector.reserved() or {}, inspector.active() or {}):
            for tasks in answer.values():
                ids.update(task.get("id") for task in tasks if task.get("id"))
        self.held = ids
        return ids

    def _forget_unacked(self, job_id: str) -> None:
        entry = broker.unacked(self.redis).get(job_id)
        if entry is not None:
            broker.drop_unacked(self.redis, entry[0])
