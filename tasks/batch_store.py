"""Batches of the OpenAI Batch API in MongoDB: the batch, its status moves, and one record per finished line.

A line's record has the id ``<batch id>/<line index>`` and is inserted once: a
line run twice (its worker died after answering, a control worker took the
batch back) finds its record there and adds nothing, so every ``custom_id``
appears exactly once in the output or error file. The lines to run are the
web's prepared lines file (``batches/<batch id>.jsonl`` under the data
folder): each line's model, operation and worker payload, or the error that
made it invalid.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import mongoengine as me

from config.clock import now
from config.ownership import owned_by

STATUSES = ("validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled")
FINISHED = ("completed", "failed", "expired", "cancelled")
COMPLETION_WINDOW = timedelta(hours=24)


class Batch(me.Document):
    meta = {"collection": "batches", "indexes": [("owner", "created_at"), "created_at"]}

    batch_id = me.StringField(primary_key=True)
    endpoint = me.StringField(required=True)
    input_file_id = me.StringField(required=True)
    completion_window = me.StringField(default="24h")
    user_metadata = me.DictField(db_field="metadata")
    owner = me.StringField()
    request_id = me.StringField()
    job_id = me.StringField()
    status = me.StringField(choices=STATUSES, required=True)
    total = me.IntField(default=0)
    completed_count = me.IntField()
    failed_count = me.IntField()
    """Set when the batch ends; while it runs the counts come from its line records."""
    output_file_id = me.StringField()
    error_file_id = me.StringField()
    errors = me.ListField(me.DictField())
    created_at = me.DateTimeField(required=True)
    expires_at = me.DateTimeField()
    in_progress_at = me.DateTimeField()
    finalizing_at = me.DateTimeField()
    completed_at = me.DateTimeField()
    failed_at = me.DateTimeField()
    expired_at = me.DateTimeField()
    cancelling_at = me.DateTimeField()
    cancelled_at = me.DateTimeField()
    expiring = me.BooleanField(default=False)
    """Its completion window passed while it ran: no line is sent any more; once the running ones are done, the
    rest go to the error file as ``batch_expired`` and the batch ends ``expired``."""

    def request_counts(self) -> dict[str, int]:
        if self.completed_count is not None:
            completed, failed = self.completed_count, self.failed_count or 0
        else:
            completed, failed = line_counts(self.batch_id)
        return {"total": self.total, "completed": completed, "failed": failed}

    def public(self) -> dict[str, Any]:
        def stamp(moment: datetime | None) -> int | None:
            return int(moment.timestamp()) if moment else None

        return {
            "id": self.batch_id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": {"object": "list", "data": list(self.errors)} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": stamp(self.created_at),
            "in_progress_at": stamp(self.in_progress_at),
            "expires_at": stamp(self.expires_at),
            "finalizing_at": stamp(self.finalizing_at),
            "completed_at": stamp(self.completed_at),
            "failed_at": stamp(self.failed_at),
            "expired_at": stamp(self.expired_at),
            "cancelling_at": stamp(self.cancelling_at),
            "cancelled_at": stamp(self.cancelled_at),
            "request_counts": self.request_counts(),
            "metadata": dict(self.user_metadata or {}) or None,
        }


class BatchLine(me.Document):
    """The outcome of one line: the worker's result (shaped into the endpoint's body when the output is read) or
    the error it answered."""

    meta = {"collection": "batch_lines", "indexes": [("batch_id", "ok", "index")]}

    line_id = me.StringField(primary_key=True)
    batch_id = me.StringField(required=True)
    index = me.IntField(required=True)
    custom_id = me.StringField(required=True)
    ok = me.BooleanField(required=True)
    status_code = me.IntField(required=True)
    result = me.DictField()
    error = me.DictField()
    request_id = me.StringField()
    key = me.StringField()
    """Random hex that names the line's answer (``batch_req_<key>``, ``chatcmpl-<key>``) the same on every read."""
    created = me.IntField()
    model = me.StringField()
    shape = me.DictField()
    """What the endpoint's shaping needs of the request (the validated body)."""


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


def output_file_ids(batch_id: str) -> tuple[str, str]:
    """The ids of a batch's output and error files, fixed by the batch, so recording them twice makes one each."""
    tail = batch_id.removeprefix("batch_")
    return f"file-{tail}-output", f"file-{tail}-errors"


# --- the prepared lines -----------------------------------------------------------------------------------


def lines_path(data_dir: Path, batch_id: str) -> Path:
    return Path(data_dir) / "batches" / f"{batch_id}.jsonl"


def write_lines(data_dir: Path, batch_id: str, lines: list[dict[str, Any]]) -> None:
    target = lines_path(data_dir, batch_id)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
    os.replace(partial, target)


def read_lines(data_dir: Path, batch_id: str, offset: int, limit: int) -> list[tuple[dict[str, Any], int]]:
    """Up to ``limit`` prepared lines from byte ``offset``, each with the offset after it."""
    found = []
    with lines_path(data_dir, batch_id).open("rb") as lines:
        lines.seek(offset)
        while len(found) < limit:
            raw = lines.readline()
            if not raw:
                break
            offset += len(raw)
            found.append((json.loads(raw), offset))
    return found


def discard_lines(data_dir: Path, batch_id: str) -> None:
    lines_path(data_dir, batch_id).unlink(missing_ok=True)


# --- batches ----------------------------------------------------------------------------------------------


def create(
    batch_id: str,
    endpoint: str,
    input_file_id: str,
    total: int,
    metadata: dict[str, Any] | None,
    owner: str | None,
    request_id: str | None,
) -> Batch:
    moment = now()
    batch = Batch(
        batch_id=batch_id,
        endpoint=endpoint,
        input_file_id=input_file_id,
        total=total,
        user_metadata=metadata or {},
        owner=owner,
        request_id=request_id,
        status="validating",
        created_at=moment,
        expires_at=moment + COMPLETION_WINDOW,
    )
    batch.save(force_insert=True)
    return batch


def start_expiring(batch_id: str) -> bool:
    return bool(Batch.objects(batch_id=batch_id, status="in_progress", expiring=False).update_one(set__expiring=True))


EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


def expire_unfinished(data_dir: Path, batch_id: str) -> int:
    """Records every line not finished yet as ``batch_expired`` (once each); how many were. Nothing once the
    prepared lines are gone (the batch was finalized before: every line is recorded)."""
    if not lines_path(data_dir, batch_id).exists():
        return 0
    done = done_indexes(batch_id)
    expired, offset = 0, 0
    while lines := read_lines(data_dir, batch_id, offset, 512):
        for line, _end in lines:
            if line["index"] not in done:
                expired += record_line(batch_id, line, 0, None, EXPIRED_ERROR)
        offset = lines[-1][1]
    return expired


def set_job(batch_id: str, job_id: str) -> None:
    Batch.objects(batch_id=batch_id).update_one(set__job_id=job_id)


def get(batch_id: str, sees: str | None = None) -> Batch | None:
    return Batch.objects(batch_id=batch_id, **owned_by(sees)).first()


def remove(batch_id: str) -> None:
    """Removes a batch whose job could not be submitted."""
    Batch.objects(batch_id=batch_id).delete()


def search(sees: str | None, after: str | None, limit: int) -> tuple[list[Batch], bool]:
    """A page of the batches ``sees`` may see, newest first; whether more follow."""
    query = Batch.objects(**owned_by(sees))
    if after:
        cursor = get(after, sees)
        if cursor is not None:
            query = query.filter(
                me.Q(created_at__lt=cursor.created_at)
                | me.Q(created_at=cursor.created_at, batch_id__lt=cursor.batch_id)
            )
    found = list(query.order_by("-created_at", "-batch_id").limit(limit + 1))
    return found[:limit], len(found) > limit


def move(batch_id: str, sources: tuple[str, ...], target: str, **changes: Any) -> bool:
    """One compare-and-set of the batch's status (and its timestamp ``<target>_at``, when it has one)."""
    stamp = f"{target}_at"
    if stamp in Batch._fields:
        changes.setdefault(stamp, now())
    updates = {f"set__{name}": value for name, value in changes.items()}
    return bool(Batch.objects(batch_id=batch_id, status__in=sources).update_one(set__status=target, **updates))


# --- lines ------------------------------------------------------------------------------------------------


def record_line(batch_id: str, line: dict[str, Any], status_code: int, result: dict | None, error: dict | None) -> bool:
    """Stores a finished line once; False when it was stored already (the line ran twice)."""
    record = BatchLine(
        line_id=f"{batch_id}/{line['index']}",
        batch_id=batch_id,
        index=line["index"],
        custom_id=line["custom_id"],
        ok=error is None,
        status_code=status_code,
        result=result or {},
        error=error or {},
        request_id=line.get("request_id"),
        key=uuid.uuid4().hex,
        created=int(now().timestamp()),
        model=line.get("model"),
        shape=line.get("shape") or {},
    )
    try:
        record.save(force_insert=True)
    except me.NotUniqueError:
        return False
    return True


def done_indexes(batch_id: str) -> set[int]:
    return {line.index for line in BatchLine.objects(batch_id=batch_id).only("index")}


def line_counts(batch_id: str) -> tuple[int, int]:
    """(completed, failed) lines of a batch so far."""
    ok = BatchLine.objects(batch_id=batch_id, ok=True).count()
    return ok, BatchLine.objects(batch_id=batch_id, ok=False).count()


def lines(batch_id: str, ok: bool) -> Iterator[BatchLine]:
    """The batch's finished lines that succeeded (or failed), in input order."""
    return iter(BatchLine.objects(batch_id=batch_id, ok=ok).order_by("index"))
