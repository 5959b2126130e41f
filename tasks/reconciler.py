"""Brings MongoDB's job and delivery records and the broker back in line after a process, an engine or Redis failed.

Run periodically by the control worker (``mlxf.reconcile``), never two runs at
once (a Redis lock; a run that finds it taken does nothing):
- a job ``processing`` whose lease ran out (its engine stopped making progress)
  or whose worker stopped beating (on two consecutive looks) is queued and sent
  again, or failed once it has had its attempts;
- a job ``queued`` for a model that failed for good (crash loop, failed load),
  or that was unloaded, fails with that reason;
- a job ``queued`` in MongoDB whose message the broker no longer holds (Redis
  restarted without persistence) or that a dead worker had taken is sent again;
- a stored job event not fanned out (its announcement was lost) is announced again;
- a pending webhook delivery whose retry task was lost is sent again, once per grace period.
Every step is a compare-and-set, so a reconciler racing a worker moves each record once.
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
from tasks import broker, job_events, job_store, webhooks
from tasks.job_queue import enqueue, queue_of

log = logging.getLogger(__name__)

DELIVER_TASK = "mlxf.deliver"
LOCK_KEY = "mlxf:reconciler-lock"
LAST_RUN_KEY = "mlxf:reconciler-last-run"
"""When the last pass ended (seconds since the epoch): ``/internal/diagnostics`` shows it."""
LOCK_SECONDS = 120.0
"""A run holding the lock longer than this (a crashed process) lets the next one in."""


def verdict(
    *,
    lease_expired: bool,
    worker_alive: bool,
    seen_dead_before: bool,
    held_by_live_worker: bool,
    attempts: int,
    max_attempts: int,
) -> str | None:
    """What to do with a ``processing`` job: None (leave it), ``suspect`` (look again next run), ``requeue``
    or ``fail``. A run out lease is proof enough; a silent worker must be silent twice and hold nothing."""
    if not lease_expired:
        if worker_alive:
            return None
        if not seen_dead_before:
            return "suspect"
        if held_by_live_worker:
            return None  # its worker is slow to beat, not dead
    return "fail" if attempts >= max_attempts else "requeue"


def last_run(client: redis.Redis) -> float | None:
    """When the last reconciler pass ended, if any did (seconds since the epoch)."""
    raw = client.get(LAST_RUN_KEY)
    return float(raw) if raw else None


def once_per(client: redis.Redis, key: str, seconds: float) -> bool:
    """True for the first caller in each window of ``seconds`` for ``key``, across processes."""
    return bool(client.set(f"mlxf:once:{key}", "1", nx=True, px=max(1, int(seconds * 1000))))


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

    @property
    def grace(self) -> float:
        return self.settings.job_lost_grace_seconds

    def run(self) -> dict[str, int] | None:
        """One pass over everything; None when another run holds the lock."""
        lock = self.redis.lock(LOCK_KEY, timeout=LOCK_SECONDS, blocking=False)
        if not lock.acquire():
            log.info("a reconciler run is still going on; this one does nothing")
            return None
        try:
            counts = {"requeued": 0, "failed": 0, "resent": 0, "events": 0, "deliveries": 0}
            self.held = None
            self.take_back_lost_runs(counts)
            self.fail_jobs_of_unavailable_models(counts)
            self.resend_lost_jobs(counts)
            self.announce_unsent_events(counts)
            self.resend_lost_deliveries(counts)
            self.redis.set(LAST_RUN_KEY, time.time())
        finally:
            try:
                lock.release()
            except redis.exceptions.LockError:
                log.warning("a reconciler run outlasted its lock (%ss)", LOCK_SECONDS)
        if any(counts.values()):
            log.info("reconciled: %s", counts)
        return counts

    def take_back_lost_runs(self, counts: dict[str, int]) -> None:
        suspects = set()
        moment = job_store.now()
        for job in job_store.processing():
            lease_expired = job_store.lease_expired(job, moment)
            alive = bool(job.worker) and self.liveness.is_alive(job.worker)
            seen = job.job_id in self.suspects
            decision = verdict(
                lease_expired=lease_expired,
                worker_alive=alive,
                seen_dead_before=seen,
                held_by_live_worker=(not alive and seen and job.job_id in self._held_by_live_workers()),
                attempts=job.attempts,
                max_attempts=self.settings.job_max_attempts,
            )
            if decision == "suspect":
                suspects.add(job.job_id)
                continue
            if decision is None:
                continue
            reason = (
                f"its lease ran out: the engine of {job.worker} made no progress"
                if lease_expired
                else f"the worker running it ({job.worker}) stopped"
            )
            # A lease renewed since it was read (MongoDB was slow, not the engine) keeps the run.
            expired_before = moment if lease_expired else None
            if decision == "fail":
                message = f"Job abandoned: {reason}, and it has had {job.attempts} attempts"
                code = "lease_expired" if lease_expired else "worker_lost"
                if job_store.fail(job.job_id, job.claim, message, code, expired_before):
                    counts["failed"] += 1
            elif (fresh := job_store.requeue(job.job_id, job.claim, expired_before)) is not None:
                log.warning("job %s: %s; queued again (attempt %d done)", job.job_id, reason, job.attempts)
                self._forget_unacked(job.job_id)
                enqueue(self.celery, self.redis, fresh)
                counts["requeued"] += 1
        self.suspects = suspects

    def fail_jobs_of_unavailable_models(self, counts: dict[str, int]) -> None:
        """Queued jobs of a model that failed for good fail with its error; those of a model that is gone too."""
        failed = {record.model_id: record for record in registry.list_records() if record.status == "failed"}
        for job in job_store.queued_for_models(list(failed)):
            record = failed[job.model_id]
            message = f"Model '{job.model_id}' failed and cannot run the job: {record.error or 'no reason recorded'}"
            if self._fail_queued(job, message, "model_failed"):
                counts["failed"] += 1

    def resend_lost_jobs(self, counts: dict[str, int]) -> None:
        stale = job_store.stale_queued(job_store.now() - timedelta(seconds=self.grace))
        if not stale:
            return
        unacked = broker.unacked(self.redis)
        waiting = broker.waiting_jobs(self.redis)
        lengths: dict[str, int] = {}
        for job in stale:
            record = registry.get_record(job.model_id)
            if record is None or record.desired != "loaded":
                message = f"Model '{job.model_id}' was unloaded before the job could run"
                if self._fail_queued(job, message, "model_unloaded"):
                    counts["failed"] += 1
                continue
            queue = queue_of(job)
            if waiting.get(job.job_id) == queue:
                if queue not in lengths:
                    lengths[queue] = broker.queue_length(self.redis, queue)
                if lengths[queue]:
                    continue  # its message waits (an index entry beside an empty queue outlived its message)
            if job.job_id in unacked:
                tag, delivered_at = unacked[job.job_id]
                if time.time() - delivered_at < self.grace:
                    continue
                if job.job_id in self._held_by_live_workers():
                    continue
                broker.drop_unacked(self.redis, tag)
            if job_store.touch_enqueued(job.job_id):
                log.warning("job %s was queued but no broker message held it; sent again", job.job_id)
                enqueue(self.celery, self.redis, job)
                counts["resent"] += 1

    def _fail_queued(self, job: job_store.Job, message: str, code: str) -> bool:
        """The job's message, if any is left, stays in the broker: a worker that takes it finds the job failed."""
        return job_store.fail(job.job_id, None, message, code)

    def announce_unsent_events(self, counts: dict[str, int]) -> None:
        for job_id, event_id in job_store.unsent_events(job_store.now() - timedelta(seconds=self.grace)):
            if once_per(self.redis, f"event:{event_id}", self.grace) and job_events.announce(job_id, event_id):
                counts["events"] += 1

    def resend_lost_deliveries(self, counts: dict[str, int]) -> None:
        grace = max(self.grace, 2 * self.settings.webhook_timeout_seconds)
        for delivery in webhooks.overdue(job_store.now() - timedelta(seconds=grace)):
            if delivery.attempt_count >= self.settings.webhook_max_attempts:
                webhooks.give_up(delivery.delivery_id, delivery.attempt_count)
                continue
            if not webhooks.postpone(delivery, grace):
                continue  # another reconciler, or the delivery's own task, moved it meanwhile
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
