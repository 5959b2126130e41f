"""Submitting, looking up and cancelling MCP jobs, and sending a job to its model's queue.

The job document is written first and the message sent second, with the job
id as the Celery task id; a submission whose message cannot be sent is removed
again, so no job is left that nobody will run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import redis
from celery import Celery
from redis.exceptions import LockError

from config.errors import ApiError
from config.model_types import MODEL_TYPES
from config.model_types import model_type as model_type_row
from config.settings import Settings
from models import registry
from models.stats import ModelStats
from tasks import broker, job_events, job_store
from tasks.celery_app import model_queue
from tasks.progress import read_progress, read_progress_detail
from tasks.replies import ReplyChannel
from tasks.urls import UnsafeUrl, check_url

log = logging.getLogger(__name__)

RUN_JOB = "mlxf.job"
JOB_HEADER = "job"
"""The message header that carries what recreates the job (``job_store.creation``)."""
RUN_CONTROL_JOB = "mlxf.control_job"
CONTROL_JOBS: dict[str, tuple[str, str | None]] = {
    "rag_query": ("rag", "chat"),
    "rag_ingest": ("rag", "embed"),
    "fusion": ("fusion", None),
    "batch": ("jobs", None),
}
"""Jobs the control worker runs (operation -> its queue, and what its model must serve): they call models
through their queues, as the API does, instead of running on a model worker. A fusion job's model is the
first its workflow calls, of any type."""
OPERATIONS = (
    *dict.fromkeys(op for row in MODEL_TYPES.values() for op in row.job_operations),
    *CONTROL_JOBS,
)
DEFAULT_ESTIMATE_MS = 2000.0


def queue_of(job: job_store.Job) -> str:
    """The broker queue a job's message waits in: its model's, or the control worker's for control jobs."""
    control = CONTROL_JOBS.get(job.operation)
    return control[0] if control else model_queue(job.model_id)


def enqueue(celery: Celery, client: redis.Redis, job: job_store.Job) -> None:
    """Sends ``job`` to its queue at its priority (the task id is the job id) and lists it as waiting."""
    celery.send_task(
        RUN_CONTROL_JOB if job.operation in CONTROL_JOBS else RUN_JOB,
        args=[job.operation, dict(job.input or {}), job.priority],
        task_id=job.job_id,
        queue=queue_of(job),
        priority=job_store.PRIORITIES[job.priority],
        headers={"request_id": job.request_id or "-", JOB_HEADER: job_store.creation(job)},
    )
    broker.sent(client, job.job_id, queue_of(job))


ADMISSION_LOCK_SECONDS = 10.0
"""Longest a submission holds (or waits for) its model's admission lock: a count and an insert take milliseconds."""

OnDemand = Callable[[str, float], bool]
ON_DEMAND_WAIT_SECONDS = 30.0
"""Longest a job submission waits for an on-demand model that is being unloaded (after an idle spell) to be gone."""


def job_creation(request: Any) -> dict[str, Any] | None:
    """The ``JOB_HEADER`` of a job task's Celery request (custom headers arrive as its attributes)."""
    headers = getattr(request, "headers", None) or {}
    return getattr(request, JOB_HEADER, None) or headers.get(JOB_HEADER)


def check_operation(model_id: str, operation: str, on_demand: OnDemand | None = None) -> None:
    """Raises the 404 of an unknown model, the 503 of one that cannot run, the 400 of a wrong operation; an
    on-demand model not loaded starts loading (the job waits in the queue for its worker)."""
    record = registry.get_record(model_id)
    if record is None and on_demand is not None and on_demand(model_id, time.monotonic() + ON_DEMAND_WAIT_SECONDS):
        record = registry.get_record(model_id)
    if record is None:
        raise ApiError(404, f"Model '{model_id}' not found", code="model_not_found", param="model_id")
    if record.status == "failed" or record.desired != "loaded":
        raise ApiError(
            503,
            f"Model '{model_id}' cannot take jobs: its status is {record.status}"
            + (f" ({record.error})" if record.error else ""),
            code="model_unavailable",
            param="model_id",
        )
    row = model_type_row(record.model_type)
    allowed = row.job_operations if row else ()
    allowed = (*allowed, *(op for op, (_queue, needs) in CONTROL_JOBS.items() if needs is None or needs in allowed))
    if operation not in allowed:
        raise ApiError(
            400,
            f"Model '{model_id}' is a {record.model_type} model: it can do {', '.join(allowed) or 'nothing'},"
            f" not {operation!r}",
            code="unsupported_operation",
            param="operation",
        )


class JobQueue:
    def __init__(self, settings: Settings, celery: Celery, client: redis.Redis, stats: ModelStats) -> None:
        self.settings = settings
        self.celery = celery
        self.redis = client
        self.stats = stats
        self.on_demand: OnDemand | None = None
        """Starts loading an on-demand model a job names (``ModelLifecycle.start_on_demand``, set by the web app)."""

    def submit(self, request: job_store.JobRequest) -> dict[str, Any]:
        model_id = request.model_id
        check_operation(model_id, request.operation, self.on_demand)
        if request.callback_url:
            try:
                check_url(request.callback_url, self.settings.webhook_networks)
            except UnsafeUrl as exc:
                raise ApiError(400, f"callback_url refused: {exc}", code="invalid_url", param="callback_url") from None
        with self.admission(model_id):
            waiting = job_store.queued_count(model_id)
            if waiting >= self.settings.job_queue_limit:
                raise ApiError(
                    429,
                    f"The queue of model '{model_id}' is full ({waiting} jobs waiting); try again later",
                    code="queue_full",
                    param="model_id",
                )
            job = job_store.create(request)
        try:
            enqueue(self.celery, self.redis, job)
        except Exception as exc:
            job_store.delete(job.job_id)
            log.exception("could not send job %s to the broker", job.job_id)
            raise ApiError(503, f"The job queue is unreachable: {exc}", code="broker_unavailable") from None
        job_events.announce(job.job_id, job.outbox[0]["event_id"])
        ahead = job_store.position(job)
        return {
            "job_id": job.job_id,
            "status": "queued",
            "created_at": job_store.iso(job.created_at),
            "position_in_queue": ahead,
            "estimated_completion_ms": self.estimate_ms(model_id, ahead),
            "request_id": request.request_id,
        }

    @contextmanager
    def admission(self, model_id: str) -> Iterator[None]:
        """One submission at a time per model from counting its waiting jobs to inserting the new one (a lock in
        Redis), so that submissions at once never take the same free place in the queue."""
        lock = self.redis.lock(f"mlxf:admission:{model_id}", timeout=ADMISSION_LOCK_SECONDS, sleep=0.01)
        if not lock.acquire(blocking_timeout=ADMISSION_LOCK_SECONDS):
            raise ApiError(
                503, f"The queue of model '{model_id}' is too busy to take a job; try again", code="service_unavailable"
            )
        try:
            yield
        finally:
            with suppress(LockError):
                lock.release()

    def estimate_ms(self, model_id: str, ahead: int) -> int:
        """Jobs ahead plus this one, each taking the model's median latency (or a default before any)."""
        typical = self.stats.summary(model_id)["p50_latency_ms"] or DEFAULT_ESTIMATE_MS
        return int((ahead + 1) * typical)

    def find(self, job_id: str, sees: str | None = None) -> job_store.Job:
        """The job, as ``sees`` may see it (another owner's is not found)."""
        job = job_store.get(job_id, sees)
        if job is None:
            raise ApiError(404, f"Job '{job_id}' not found", code="job_not_found", param="job_id")
        return job

    def status(self, job_id: str, sees: str | None = None) -> dict[str, Any]:
        job = self.find(job_id, sees)
        view = job.public()
        if job.status == "queued":
            ahead = job_store.position(job)
            view.update(position_in_queue=ahead, estimated_completion_ms=self.estimate_ms(job.model_id, ahead))
        elif job.status == "processing":
            view["progress"] = read_progress(self.redis, job_id)
            detail = read_progress_detail(self.redis, job_id)
            if detail is not None:
                view["progress_detail"] = detail
        return view

    def cancel(self, job_id: str, sees: str | None = None) -> dict[str, Any]:
        """Cancels a queued job or a running one (it stops at the next token); 409 for a job that already
        finished. A queued job's message stays in the broker, whose lists are never read here: the worker that
        takes it finds the job no longer queued and does nothing."""
        self.find(job_id, sees)
        was = job_store.cancel(job_id)
        if was is None:
            job = self.find(job_id)
            raise ApiError(
                409,
                f"Job '{job_id}' already finished (status {job.status}) and cannot be cancelled",
                code="job_already_finished",
                param="job_id",
            )
        job = self.find(job_id)
        if was == "processing":
            ReplyChannel(self.redis, job_id, ttl_seconds=self.settings.stream_ttl_seconds).cancel()
        return {"job_id": job_id, "status": "cancelled", "cancelled_at": job_store.iso(job.cancelled_at)}
