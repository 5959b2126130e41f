"""MCP job documents in MongoDB and their state transitions.

Every transition is one conditional ``update_one`` (compare-and-set on the
status, and for a running job on the claim token of the run that owns it), so
two processes racing over a job cannot both move it, and a late writer (a
worker that was presumed dead, a duplicate message) changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import mongoengine as me

from config.clock import as_utc, iso, now
from config.leases import Lease, as_update, new_token
from config.ownership import owned_by
from tasks import job_events, job_states
from tasks.job_states import FINISHED, STATUSES

log = logging.getLogger(__name__)

__all__ = ["FINISHED", "STATUSES"]

PRIORITIES = {"high": 1, "normal": 5, "low": 9}
"""Broker priority per job priority (0, the highest, is left to interactive requests)."""
LINE_PRIORITY = max(PRIORITIES.values()) + 1
"""A batch line's place in a model worker's engine: after interactive requests (0) and every job."""

LEASE = Lease("lease_expires_at", holder="claim")
"""A running job's lease: the run holding ``claim`` owns the job until ``lease_expires_at``."""


class Job(me.Document):
    meta = {
        "collection": "jobs",
        "indexes": [
            ("model_id", "status", "created_at"),
            ("status", "created_at"),
            "created_at",
            ("status", "lease_expires_at"),
            "events_pending",
            ("owner", "status", "created_at"),
        ],
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
    owner = me.StringField()
    """The API key that submitted the job (see ``config.ownership``)."""
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
    lease_expires_at = me.DateTimeField()
    outbox = me.ListField(me.DictField())
    """Every event of the job's moves, appended by the same update as the move (see ``_move``)."""
    events_pending = me.IntField(default=0)
    sent_events = me.ListField(me.StringField())
    """Ids of the outbox events already turned into deliveries."""

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
    owner: str | None = None


def create(request: JobRequest, job_id: str | None = None, created_at: datetime | None = None) -> Job:
    """Inserts a new queued job (``job_id`` and ``created_at``: a job recreated from its message)."""
    moment = created_at or now()
    job = Job(
        job_id=job_id or new_job_id(),
        model_id=request.model_id,
        operation=request.operation,
        input=request.input,
        priority=request.priority,
        callback_url=request.callback_url,
        callback_secret=request.callback_secret,
        user_metadata=request.metadata or {},
        request_id=request.request_id,
        owner=request.owner,
        status="queued",
        created_at=moment,
        enqueued_at=moment,
        events_pending=1,
    )
    job.outbox = [_outbox_entry(job, "job.queued", moment)]
    job.save(force_insert=True)
    return job


def creation(job: Job) -> dict[str, Any]:
    """What recreates ``job`` as it was submitted, but its input (the message's arguments carry that): sent with
    its message, so that a job whose document the store lost after acknowledging it still runs."""
    return {
        "model_id": job.model_id,
        "operation": job.operation,
        "priority": job.priority,
        "callback_url": job.callback_url,
        "callback_secret": job.callback_secret,
        "metadata": dict(job.user_metadata or {}),
        "request_id": job.request_id,
        "owner": job.owner,
        "created_at": iso(job.created_at),
    }


def claim_or_recreate(
    job_id: str, worker: str, lease_seconds: float, made: dict[str, Any] | None, job_input: dict[str, Any]
) -> str | None:
    """``claim``; when the job's document is missing though its message came (the store lost a write it had
    acknowledged), the job is inserted again from ``made`` (``creation``) under the same id, then claimed."""
    token = claim(job_id, worker, lease_seconds)
    if token is not None or not made or get(job_id) is not None:
        return token
    request = JobRequest(
        model_id=made["model_id"],
        operation=made["operation"],
        input=job_input,
        priority=made["priority"],
        callback_url=made.get("callback_url"),
        callback_secret=made.get("callback_secret"),
        metadata=made.get("metadata") or {},
        request_id=made.get("request_id"),
        owner=made.get("owner"),
    )
    try:
        create(request, job_id=job_id, created_at=datetime.fromisoformat(made["created_at"].replace("Z", "+00:00")))
    except me.NotUniqueError:
        pass  # inserted meanwhile (another delivery of the same message)
    else:
        log.warning("job %s had a message but no document (lost by the store); recreated from its message", job_id)
    return claim(job_id, worker, lease_seconds)


def get(job_id: str, sees: str | None = None) -> Job | None:
    """The job, if it exists and ``sees`` may see it."""
    return Job.objects(job_id=job_id, **owned_by(sees)).first()


def delete(job_id: str) -> None:
    """Removes a job that never reached the broker (its submission failed half-way)."""
    Job.objects(job_id=job_id, status="queued").delete()


# --- transitions ----------------------------------------------------------------------------------------


def _outbox_entry(job: Job, event: str, moment: datetime) -> dict[str, Any]:
    """The event of a move as stored with it: its id, time and the job as it stands after the move (no result)."""
    return {
        "event_id": job_states.event_id(job.job_id, event, job.attempts),
        "event": event,
        "at": moment,
        "job": job.public(with_result=False),
    }


def _events_of(job: Job, move: job_states.Move) -> list[str]:
    """The events of a move: its ``job.*`` event, and for a batch's job that ends, its ``batch.*`` event too."""
    ended = (job.result or {}).get("status") if move.target == "completed" else move.target
    batch_event = job_states.BATCH_EVENTS.get(ended or "completed") if job.operation == "batch" else None
    return [move.event, batch_event] if batch_event else [move.event]


def _move(
    job_id: str, move_name: str, token: str | None = None, expect: dict[str, Any] | None = None, **changes: Any
) -> tuple[Job, str] | None:
    """Makes one move of the state machine as one compare-and-set that also appends the move's event to the
    job's outbox; then announces the event. Returns the job as it is after the move and the status it left,
    or None when the move is not allowed (another process moved the job first, or ``token`` does not own it).

    A change whose value is None unsets the field; a callable value is computed from the job as read, and the
    field's read value joins the compare-and-set. ``expect`` adds conditions of the caller's own.
    """
    move = job_states.MOVES[move_name]
    for _ in range(3):  # a move allowed from two statuses may see the job change between reading and writing
        job = get(job_id)
        if job is None or job_states.target(move_name, job.status) is None:
            return None
        if move.owned and job.claim != token:
            return None
        left = job.status
        conditions: dict[str, Any] = {"status": left, **(expect or {})}
        if move.owned:
            conditions.update(LEASE.held_by(token))
        moment = now()
        changes_now = dict(changes)
        for name, value in changes.items():
            if callable(value):
                conditions[name] = getattr(job, name)
                changes_now[name] = value(job)
        for name, value in changes_now.items():
            setattr(job, name, value)
        job.status = move.target
        entries = [_outbox_entry(job, event, moment) for event in _events_of(job, move)]
        if Job.objects(job_id=job_id, **conditions).update_one(
            set__status=move.target,
            push_all__outbox=entries,
            inc__events_pending=len(entries),
            **as_update(changes_now),
        ):
            for entry in entries:
                job_events.announce(job_id, entry["event_id"])
            return job, left
        if move.owned:
            return None
    return None


def claim(job_id: str, worker: str, lease_seconds: float) -> str | None:
    """queued -> processing for the run on ``worker``, leased for ``lease_seconds``; the claim token, or None."""
    token = new_token()
    moment = now()
    moved = _move(
        job_id,
        "claim",
        started_at=moment,
        worker=worker,
        attempts=lambda job: job.attempts + 1,
        **LEASE.acquire(lease_seconds, token, moment),
    )
    return token if moved is not None else None


def renew_lease(job_id: str, token: str, lease_seconds: float) -> bool:
    """Extends the lease of the run holding ``token``; False when the job is no longer that run's."""
    return bool(LEASE.renew(Job.objects(job_id=job_id, status="processing", **LEASE.held_by(token)), lease_seconds))


def lease_expired(job: Job, moment: datetime) -> bool:
    """Whether the lease of ``job`` (as read) had run out at ``moment``: its engine stopped making progress."""
    return LEASE.has_expired(job, moment)


def _still_expired(expired_before: datetime | None) -> dict[str, Any] | None:
    return LEASE.expired_before(expired_before) if expired_before is not None else None


def complete(job_id: str, token: str, result: dict[str, Any]) -> bool:
    return _move(job_id, "complete", token, completed_at=now(), result=result, **LEASE.release()) is not None


def fail(
    job_id: str, token: str | None, error: str, code: str = "job_failed", expired_before: datetime | None = None
) -> bool:
    """processing (owned by ``token``) -> failed; with no token, queued -> failed. With ``expired_before``, only
    while the run's lease is still out of date (its worker did not renew it meanwhile)."""
    move = "fail" if token else "fail_queued"
    return (
        _move(
            job_id,
            move,
            token,
            _still_expired(expired_before),
            failed_at=now(),
            error=error,
            error_code=code,
            **LEASE.release(),
        )
        is not None
    )


def cancel(job_id: str) -> str | None:
    """queued or processing -> cancelled; returns the status it was cancelled from, or None."""
    moved = _move(job_id, "cancel", cancelled_at=now(), **LEASE.release())
    return moved[1] if moved else None


def requeue(job_id: str, token: str, expired_before: datetime | None = None) -> Job | None:
    """processing -> queued again, for a job whose run was lost (worker dead, or lease run out: then only while
    it is still out of date at ``expired_before``)."""
    moved = _move(
        job_id,
        "requeue",
        token,
        _still_expired(expired_before),
        enqueued_at=now(),
        worker=None,
        **LEASE.release(forget_holder=True),
    )
    return moved[0] if moved else None


def touch_enqueued(job_id: str) -> bool:
    """Marks a queued job as sent to the broker again now."""
    return bool(Job.objects(job_id=job_id, status="queued").update_one(set__enqueued_at=now()))


# --- the outbox -----------------------------------------------------------------------------------------


def outbox_entry(job: Job, event_id: str) -> dict[str, Any] | None:
    return next((dict(entry) for entry in job.outbox if entry.get("event_id") == event_id), None)


def mark_fanned_out(job_id: str, event_id: str) -> bool:
    """Records that ``event_id`` has been turned into deliveries; False when it already was."""
    return bool(
        Job.objects(job_id=job_id, sent_events__ne=event_id).update_one(
            push__sent_events=event_id, dec__events_pending=1
        )
    )


def unsent_events(older_than: datetime) -> list[tuple[str, str]]:
    """(job id, event id) of every stored event not yet fanned out that was recorded before ``older_than``."""
    found = []
    for job in Job.objects(events_pending__gt=0).only("job_id", "outbox", "sent_events"):
        sent = set(job.sent_events)
        for entry in job.outbox:
            at = entry.get("at")
            if entry.get("event_id") not in sent and at is not None and as_utc(at) < older_than:
                found.append((job.job_id, entry["event_id"]))
    return found


# --- queries --------------------------------------------------------------------------------------------


def queued_count(model_id: str) -> int:
    return Job.objects(model_id=model_id, status="queued").count()


def queued_count_of(owner: str) -> int:
    """Jobs of ``owner`` not finished yet (queued or running), for its quota."""
    return Job.objects(owner=owner, status__in=("queued", "processing")).count()


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
    status: str | None,
    model_id: str | None,
    limit: int,
    offset: int,
    sort_by: str,
    order: str,
    sees: str | None = None,
) -> tuple[list[Job], int]:
    filters = {key: value for key, value in (("status", status), ("model_id", model_id)) if value}
    query = Job.objects(**filters, **owned_by(sees))
    total = query.count()
    direction = "-" if order == "desc" else "+"
    jobs = list(query.order_by(f"{direction}{sort_by}", f"{direction}job_id").skip(offset).limit(limit))
    return jobs, total


def stale_queued(older_than: datetime) -> list[Job]:
    return list(Job.objects(status="queued", enqueued_at__lt=older_than))


def processing() -> list[Job]:
    return list(Job.objects(status="processing"))


def queued_for_models(model_ids: list[str]) -> list[Job]:
    return list(Job.objects(status="queued", model_id__in=model_ids)) if model_ids else []
