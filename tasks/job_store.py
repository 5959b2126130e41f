"""MCP job documents in MongoDB and their state transitions.

Every transition is one conditional ``update_one`` (compare-and-set on the
status, and for a running job on the claim token of the run that owns it), so
two processes racing over a job cannot both move it, and a late writer (a
worker that was presumed dead, a duplicate message) changes nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mongoengine as me

STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
PRIORITIES = {"high": 1, "normal": 5, "low": 9}
"""Broker priority per job priority (0, the highest, is left to interactive requests)."""


def now() -> datetime:
    """The current time at MongoDB's precision (milliseconds), so what is kept compares equal to what was written."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Job(me.Document):
    meta = {
        "collection": "jobs",
        "indexes": [("model_id", "status", "created_at"), ("status", "created_at"), "created_at"],
    }

    job_id = me.StringField(primary_key=True)
    model_id = me.StringField(required=True)
    operation = me.StringField(required=True)
    input = me.DictField()
    priority = me.StringField(choices=tuple(PRIORITIES), default="normal")
    callback_url = me.StringField()
    callback_secret = me.StringField()
    user_metadata = me.DictField(db_field="metadata")
    request_id = me.StringField()
    status = me.StringField(choices=STATUSES, required=True)
    created_at = me.DateTimeField(required=True)
    enqueued_at = me.DateTimeField()
    started_at = me.DateTimeField()
    completed_at = me.DateTimeField()
    failed_at = me.DateTimeField()
    cancelled_at = me.DateTimeField()
    result = me.DictField()
    error = me.StringField()
    error_code = me.StringField()
    attempts = me.IntField(default=0)
    worker = me.StringField()
    claim = me.StringField()

    @property
    def finished_at(self) -> datetime | None:
        return self.completed_at or self.failed_at or self.cancelled_at

    def latency_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.created_at).total_seconds() * 1000)

    def public(self, with_result: bool = True) -> dict[str, Any]:
        """The job as the API and the webhook payloads show it (no secret, no internal claim)."""
        view: dict[str, Any] = {
            "job_id": self.job_id,
            "status": self.status,
            "model_id": self.model_id,
            "operation": self.operation,
            "priority": self.priority,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "completed_at": iso(self.completed_at),
            "failed_at": iso(self.failed_at),
            "cancelled_at": iso(self.cancelled_at),
            "latency_ms": self.latency_ms(),
            "attempts": self.attempts,
            "request_id": self.request_id,
            "metadata": dict(self.user_metadata or {}),
        }
        if self.status == "completed" and with_result:
            view["result"] = dict(self.result or {})
        if self.error:
            view["error"] = self.error
            view["error_code"] = self.error_code
        return {key: value for key, value in view.items() if value is not None}


def new_job_id() -> str:
    return f"job-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class JobRequest:
    """What a caller asks of a new job, validated."""

    model_id: str
    operation: str
    input: dict[str, Any]
    priority: str = "normal"
    callback_url: str | None = None
    callback_secret: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    request_id: str | None = None


def create(request: JobRequest) -> Job:
    moment = now()
    job = Job(
        job_id=new_job_id(),
        model_id=request.model_id,
        operation=request.operation,
        input=request.input,
        priority=request.priority,
        callback_url=request.callback_url,
        callback_secret=request.callback_secret,
        user_metadata=request.metadata or {},
        request_id=request.request_id,
        status="queued",
        created_at=moment,
        enqueued_at=moment,
    )
    job.save(force_insert=True)
    return job


def get(job_id: str) -> Job | None:
    return Job.objects(job_id=job_id).first()


def delete(job_id: str) -> None:
    """Removes a job that never reached the broker (its submission failed half-way)."""
    Job.objects(job_id=job_id, status="queued").delete()


# --- transitions ----------------------------------------------------------------------------------------


def claim(job_id: str, worker: str) -> str | None:
    """queued -> processing for the run on ``worker``; the claim token that run must show later, or None."""
    token = uuid.uuid4().hex
    moved = Job.objects(job_id=job_id, status="queued").update_one(
        set__status="processing",
        set__started_at=now(),
        set__worker=worker,
        set__claim=token,
        inc__attempts=1,
    )
    return token if moved else None


def complete(job_id: str, token: str, result: dict[str, Any]) -> bool:
    return bool(
        Job.objects(job_id=job_id, status="processing", claim=token).update_one(
            set__status="completed", set__completed_at=now(), set__result=result
        )
    )


def fail(job_id: str, token: str | None, error: str, code: str = "job_failed") -> bool:
    """processing (owned by ``token``) -> failed; with no token, queued -> failed."""
    conditions = {"status": "processing", "claim": token} if token else {"status": "queued"}
    return bool(
        Job.objects(job_id=job_id, **conditions).update_one(
            set__status="failed", set__failed_at=now(), set__error=error, set__error_code=code
        )
    )


def cancel(job_id: str) -> str | None:
    """queued or processing -> cancelled; returns the status it was cancelled from, or None."""
    for status in ("queued", "processing"):
        if Job.objects(job_id=job_id, status=status).update_one(set__status="cancelled", set__cancelled_at=now()):
            return status
    return None


def requeue(job_id: str, token: str) -> bool:
    """processing -> queued again, for a job whose worker died under it."""
    return bool(
        Job.objects(job_id=job_id, status="processing", claim=token).update_one(
            set__status="queued", set__enqueued_at=now(), unset__worker=True, unset__claim=True
        )
    )


def touch_enqueued(job_id: str) -> bool:
    """Marks a queued job as sent to the broker again now."""
    return bool(Job.objects(job_id=job_id, status="queued").update_one(set__enqueued_at=now()))


# --- queries --------------------------------------------------------------------------------------------


def queued_count(model_id: str) -> int:
    return Job.objects(model_id=model_id, status="queued").count()


def position(job: Job) -> int:
    """Jobs of the same model that will run before ``job``: higher priority, or same priority and older."""
    rank = PRIORITIES[job.priority]
    ahead = 0
    for priority, other_rank in PRIORITIES.items():
        if other_rank < rank:
            ahead += Job.objects(model_id=job.model_id, status="queued", priority=priority).count()
    ahead += Job.objects(
        model_id=job.model_id, status="queued", priority=job.priority, created_at__lt=job.created_at
    ).count()
    return ahead


def search(
    status: str | None, model_id: str | None, limit: int, offset: int, sort_by: str, order: str
) -> tuple[list[Job], int]:
    filters = {key: value for key, value in (("status", status), ("model_id", model_id)) if value}
    query = Job.objects(**filters)
    total = query.count()
    direction = "-" if order == "desc" else "+"
    jobs = list(query.order_by(f"{direction}{sort_by}", f"{direction}job_id").skip(offset).limit(limit))
    return jobs, total


def stale_queued(older_than: datetime) -> list[Job]:
    return list(Job.objects(status="queued", enqueued_at__lt=older_than))


def processing() -> list[Job]:
    return list(Job.objects(status="processing"))
