"""Running a batch as an MCP job (operation ``batch``) on the ``jobs`` queue, without holding a pool thread for it.

The job's task starts a chain of short *pump rounds* (``mlxf.batch.pump``) and
returns. Each round, while its claim on the job holds: collects the answers of
the lines in flight from their reply streams and records each once
(``tasks.batch_store``), sends lines that were lost with a dead worker again,
sends new lines to their models' queues (at most the model's batch size plus
``EXTRA_IN_FLIGHT`` per model at a time, at the lowest priority of all, so a
10,000-line batch never floods the broker nor delays anyone), then sends the
next round. A control worker that dies breaks the chain; its lease runs out and
the reconciler queues the job again, whose next run resumes from the recorded
lines and the lines still in flight (kept in Redis).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import redis
from celery import current_app, shared_task

from config.clock import as_utc, now
from config.errors import ApiError
from config.redis_client import connect_redis
from config.settings import Settings
from models import registry
from models.liveness import Liveness
from tasks import batch_store, file_store, job_store
from tasks.celery_app import model_queue
from tasks.dispatch import Dispatcher
from tasks.key_usage import add_tokens, usage_tokens
from tasks.progress import write_progress
from tasks.replies import ReplyChannel

log = logging.getLogger(__name__)

PUMP_TASK = "mlxf.batch.pump"
JOBS_QUEUE = "jobs"
INFER_TASK = "mlxf.infer"
ENGINE_PRIORITY = job_store.LINE_PRIORITY
"""A line's place in a model worker's engine: after interactive requests (0) and every job (1-9); the worker
follows it on a thread of its own, not a pool thread (``tasks.inference``)."""
BROKER_PRIORITY = max(job_store.PRIORITIES.values())
"""The broker's lowest priority step (a ``low`` job's too: the broker has ten steps, 0-9)."""
EXTRA_IN_FLIGHT = 2
"""Lines sent to a model beyond what its workers batch, so that a freed slot is filled at once."""
READ_BLOCK_MS = 500
IDLE_ROUND_SECONDS = 1.0
MAX_ROUND_ERRORS = 20
KEY_TTL_SECONDS = 7 * 24 * 3600


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    liveness: Liveness
    dispatcher: Dispatcher


@cache
def runtime() -> Runtime:
    settings = Settings.from_env()
    client = connect_redis(settings)
    liveness = Liveness(client, settings.worker_heartbeat_ttl_seconds)
    return Runtime(settings, client, liveness, Dispatcher(settings, current_app, client, liveness))


def _in_flight_key(batch_id: str) -> str:
    return f"mlxf:batch:{batch_id}:in-flight"


def _claim_key(batch_id: str, token: str, part: str) -> str:
    """Keys of one run of the batch's job: where its scan of the lines is, and which lines are done."""
    return f"mlxf:batch:{batch_id}:{token}:{part}"


def job_model(model_ids: list[str], default: str) -> str:
    """The model a batch's job is listed under: the first of its lines' models that is loaded, else ``default``."""
    for model_id in dict.fromkeys(model_ids):
        record = registry.get_record(model_id)
        if record is not None and record.desired == "loaded" and record.status != "failed":
            return model_id
    return default


# --- the job ----------------------------------------------------------------------------------------------


def start(job_id: str, token: str, payload: dict[str, Any]) -> None:
    """The batch job's run: marks the batch in progress and starts the pump; returns at once."""
    batch = batch_store.get(str(payload.get("batch_id")))
    if batch is None:
        job_store.fail(job_id, token, f"No batch {payload.get('batch_id')!r} to run", "batch_not_found")
        return
    batch_store.move(batch.batch_id, ("validating",), "in_progress")
    send_round(batch.batch_id, job_id, token)


def send_round(batch_id: str, job_id: str, token: str, delay: float | None = None, errors: int = 0) -> None:
    current_app.send_task(PUMP_TASK, args=[batch_id, job_id, token, errors], queue=JOBS_QUEUE, countdown=delay or None)


@shared_task(name=PUMP_TASK, ignore_result=True, acks_late=False)
def pump(batch_id: str, job_id: str, token: str, errors: int = 0) -> None:
    try:
        delay = pump_round(batch_id, job_id, token)
    except Exception as exc:  # noqa: BLE001 - a round that failed (the store was away) is tried again
        log.exception("a round of batch %s failed", batch_id)
        if errors + 1 >= MAX_ROUND_ERRORS:
            message = f"The batch stopped after {errors + 1} failed rounds: {type(exc).__name__}: {exc}"[:1000]
            job_store.fail(job_id, token, message, "batch_failed")
            batch_store.move(batch_id, ("validating", "in_progress", "finalizing", "cancelling"), "failed")
            return
        send_round(batch_id, job_id, token, IDLE_ROUND_SECONDS, errors + 1)
        return
    if delay is not None:
        send_round(batch_id, job_id, token, delay)


def pump_round(batch_id: str, job_id: str, token: str) -> float | None:
    """One round of the batch; the pause before the next, or None when there is none (done, or not this run's)."""
    settings = runtime().settings
    job = job_store.get(job_id)
    batch = batch_store.get(batch_id)
    if job is None or batch is None:
        return None
    if job.status == "cancelled" and batch.status not in batch_store.FINISHED:
        batch_store.move(batch_id, ("validating", "in_progress"), "cancelling")
        finalize(batch_id, None, None)  # cancelled through the jobs API: what is done is written
        return None
    if job.status != "processing" or job.claim != token:
        return None
    if not job_store.renew_lease(job_id, token, settings.job_lease_seconds):
        return None
    if batch.status in ("finalizing", *batch_store.FINISHED):
        finalize(batch_id, job_id, token)
        return None
    if batch.status == "in_progress" and batch.expires_at and as_utc(batch.expires_at) <= now():
        batch.expiring = batch_store.start_expiring(batch_id) or batch.expiring
    stopping = batch.status == "cancelling" or batch.expiring
    run = Pump(runtime(), batch, token)
    moved = run.collect()
    if not stopping:
        moved += run.dispatch()
    write_progress(
        runtime().redis,
        job_id,
        run.done_count() / max(batch.total, 1),
        {"lines_done": run.done_count(), "lines": batch.total},
    )
    if not run.flights and (stopping or run.scanned_all):
        finalize(batch_id, job_id, token)
        return None
    return 0.0 if moved else IDLE_ROUND_SECONDS


def finalize(batch_id: str, job_id: str | None, token: str | None) -> None:
    """Records the output and error files of what is done, ends the batch (completed, or cancelled when it was
    cancelling), then its job. Every step may be done twice (a run that died midway is resumed): the files have
    ids fixed by the batch and each status move is a compare-and-set."""
    batch = batch_store.get(batch_id)
    if batch is None:
        return
    cancelled = batch.status in ("cancelling", "cancelled")
    expired = batch.expiring and not cancelled
    if batch.status == "in_progress":
        batch_store.move(batch_id, ("in_progress",), "finalizing")
    if expired:
        batch_store.expire_unfinished(runtime().settings.data_dir, batch_id)
    completed, failed = batch_store.line_counts(batch_id)
    output_id, error_id = batch_store.output_file_ids(batch_id)
    if completed:
        file_store.record_output(output_id, batch_id, "output", batch.owner)
    if failed:
        file_store.record_output(error_id, batch_id, "error", batch.owner)
    target = "cancelled" if cancelled else "expired" if expired else "completed"
    batch_store.move(
        batch_id,
        ("cancelling",) if cancelled else ("finalizing",),
        target,
        completed_count=completed,
        failed_count=failed,
        output_file_id=output_id if completed else None,
        error_file_id=error_id if failed else None,
    )
    counts = {"total": batch.total, "completed": completed, "failed": failed}
    if job_id and token:
        if cancelled:
            job_store.cancel(job_id)
        else:
            outcome = {
                "batch_id": batch_id,
                "status": target,
                "request_counts": counts,
                "output_file_id": output_id if completed else None,
                "error_file_id": error_id if failed else None,
            }
            job_store.complete(job_id, token, outcome)
    _forget(batch_id, token)
    log.info("batch %s %s: %s", batch_id, target, counts)


def _forget(batch_id: str, token: str | None) -> None:
    client = runtime().redis
    keys = [_in_flight_key(batch_id)]
    if token:
        keys += [_claim_key(batch_id, token, part) for part in ("offset", "done")]
    client.delete(*keys)
    batch_store.discard_lines(runtime().settings.data_dir, batch_id)


def cancel(batch_id: str, sees: str | None) -> batch_store.Batch:
    """Stops dispatching the batch's lines: ``cancelling`` while the lines running finish (the pump then writes
    what is done and ends it ``cancelled``); a batch whose job has not started is cancelled at once."""
    batch = find(batch_id, sees)
    if batch.status in ("finalizing", *batch_store.FINISHED):
        raise ApiError(
            409,
            f"Batch '{batch_id}' is {batch.status} and cannot be cancelled",
            code="batch_not_cancellable",
            param="batch_id",
        )
    batch_store.move(batch_id, ("validating", "in_progress"), "cancelling")
    job = job_store.get(batch.job_id) if batch.job_id else None
    if job is not None and job.status == "queued" and job_store.cancel(job.job_id) == "queued":
        finalize(batch_id, None, None)
    return find(batch_id, sees)


def find(batch_id: str, sees: str | None = None) -> batch_store.Batch:
    """The batch as ``sees`` may see it; one whose job failed (it had its attempts) is failed too."""
    batch = batch_store.get(batch_id, sees)
    if batch is None:
        raise ApiError(404, f"Batch '{batch_id}' not found", code="batch_not_found", param="batch_id")
    if batch.status not in batch_store.FINISHED and batch.job_id:
        job = job_store.get(batch.job_id)
        if job is not None and job.status == "failed":
            error = {"code": job.error_code, "message": job.error, "param": None, "line": None}
            batch_store.move(batch_id, (batch.status,), "failed", errors=[error])
            batch = batch_store.get(batch_id, sees) or batch
    return batch


# --- one round --------------------------------------------------------------------------------------------


RESENT_CODES = ("worker_lost",)


class Pump:
    """One round's view of a batch: the lines in flight (Redis), the lines done (this run's set, filled from the
    line records at the run's first round) and where the run's scan of the prepared lines is."""

    def __init__(self, rt: Runtime, batch: batch_store.Batch, token: str) -> None:
        self.rt = rt
        self.batch = batch
        self.batch_id = batch.batch_id
        self.client = rt.redis
        self.flights: dict[int, dict[str, Any]] = {
            int(index): json.loads(raw) for index, raw in self.client.hgetall(_in_flight_key(self.batch_id)).items()
        }
        self.offset_key = _claim_key(self.batch_id, token, "offset")
        self.done_key = _claim_key(self.batch_id, token, "done")
        if not self.client.exists(self.offset_key):
            done = batch_store.done_indexes(self.batch_id)
            pipe = self.client.pipeline()
            pipe.delete(self.done_key)
            if done:
                pipe.sadd(self.done_key, *done)
            pipe.set(self.offset_key, 0, ex=KEY_TTL_SECONDS)
            pipe.expire(self.done_key, KEY_TTL_SECONDS)
            pipe.execute()
        self.scanned_all = False

    def done_count(self) -> int:
        return int(self.client.scard(self.done_key))

    # collecting answers

    def collect(self) -> int:
        """Records the lines whose answers came; sends again those lost with their worker. Lines moved."""
        if not self.flights:
            return 0
        streams = {
            ReplyChannel(self.client, f["task_id"]).stream_key: f.get("cursor", "0") for f in self.flights.values()
        }
        by_stream = {ReplyChannel(self.client, f["task_id"]).stream_key: f for f in self.flights.values()}
        answer = self.client.xread(streams, block=READ_BLOCK_MS, count=256)
        moved = 0
        heard: set[int] = set()
        for key, entries in answer or []:
            flight = by_stream[key.decode() if isinstance(key, bytes) else key]
            heard.add(flight["index"])
            for entry_id, fields in entries:
                flight["cursor"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                event = json.loads(fields.get(b"event", fields.get("event")))
                kind = event.get("type")
                if kind == "started":
                    flight["worker"] = event.get("worker")
                elif kind == "done":
                    self.finish(flight, 200, event["result"], None)
                    moved += 1
                    break
                elif kind == "error":
                    error = ApiError.from_dict(event["error"])
                    if error.code in RESENT_CODES:
                        self.resend(flight, error)
                    else:
                        self.finish(flight, error.status, None, error.envelope())
                    moved += 1
                    break
            else:
                self.client.hset(_in_flight_key(self.batch_id), flight["index"], json.dumps(flight))
        for index, flight in list(self.flights.items()):
            if index not in heard and self.lost(flight):
                self.resend(flight, ApiError(503, "The worker running this line stopped", code="worker_lost"))
                moved += 1
        return moved

    def lost(self, flight: dict[str, Any]) -> bool:
        """Whether a line's task can no longer answer: its worker died, or it was not started and a worker of
        its model that could have taken it died, or it is past the job timeout."""
        if time.time() - flight["sent_at"] > self.rt.settings.job_timeout_seconds:
            return True
        if flight.get("worker"):
            return not self.rt.liveness.is_alive(flight["worker"])
        return any(not self.rt.liveness.is_alive(worker) for worker in flight.get("workers") or [])

    def resend(self, flight: dict[str, Any], error: ApiError) -> None:
        ReplyChannel(self.client, flight["task_id"]).cancel()
        current_app.control.revoke(flight["task_id"])
        if flight.get("attempts", 1) >= self.rt.settings.job_max_attempts:
            self.finish(flight, error.status, None, error.envelope())
            return
        log.warning("batch %s: line %s lost (%s); sending it again", self.batch_id, flight["custom_id"], error.message)
        self.send(flight, flight.get("attempts", 1) + 1)

    def finish(self, flight: dict[str, Any], status: int, result: dict | None, error: dict | None) -> None:
        if batch_store.record_line(self.batch_id, flight, status, result, error):  # once, whatever ran twice
            add_tokens(self.client, self.batch.owner, usage_tokens((result or {}).get("usage")))
        pipe = self.client.pipeline()
        pipe.sadd(self.done_key, flight["index"])
        pipe.hdel(_in_flight_key(self.batch_id), flight["index"])
        if flight.get("task_id"):
            pipe.delete(ReplyChannel(self.client, flight["task_id"]).stream_key)
        pipe.execute()
        self.flights.pop(flight["index"], None)

    # sending lines

    def dispatch(self) -> int:
        """Sends the next lines while their models have room; records invalid lines as failed. Lines moved."""
        offset = int(self.client.get(self.offset_key) or 0)
        done = {int(index) for index in self.client.smembers(self.done_key)}
        room: dict[str, int] = {}
        moved = 0
        while True:
            lines = batch_store.read_lines(self.rt.settings.data_dir, self.batch_id, offset, 64)
            if not lines:
                self.scanned_all = True
                break
            for line, end in lines:
                if line["index"] in done or line["index"] in self.flights:
                    offset = end
                    continue
                if "error" in line:
                    error = ApiError.from_dict(line["error"])
                    self.finish(line, error.status, None, error.envelope())
                    offset, moved = end, moved + 1
                    continue
                verdict = self.room_for(line, room)
                if verdict == "wait":
                    self.client.set(self.offset_key, offset, ex=KEY_TTL_SECONDS)
                    return moved
                if isinstance(verdict, ApiError):
                    self.finish(line, verdict.status, None, verdict.envelope())
                else:
                    self.send(line, 1)
                    room[line["model"]] -= 1
                offset, moved = end, moved + 1
        self.client.set(self.offset_key, offset, ex=KEY_TTL_SECONDS)
        return moved

    def room_for(self, line: dict[str, Any], room: dict[str, int]) -> str | ApiError:
        """``send``, ``wait`` (the model is full, or has no worker for now), or the error that ends the line."""
        model_id = line["model"]
        if model_id not in room:
            try:
                self.rt.dispatcher.require_model(model_id, line["operation"])
            except ApiError as exc:
                if exc.status != 503:
                    return exc
                record = registry.get_record(model_id)
                if record is None or record.status == "failed" or record.desired != "loaded":
                    return exc
                return "wait"  # its worker is (re)starting: the line waits for it
            workers = self.rt.liveness.workers(model_id)
            capacity = sum(int(worker.get("max_concurrency") or 1) for worker in workers) + EXTRA_IN_FLIGHT
            room[model_id] = capacity - sum(1 for f in self.flights.values() if f["model"] == model_id)
        return "send" if room[model_id] > 0 else "wait"

    def send(self, line: dict[str, Any], attempts: int) -> None:
        """Sends a line to its model's queue (then lists it in flight: a line sent but not listed runs again)."""
        model_id = line["model"]
        task_id = f"task-{uuid.uuid4().hex}"
        current_app.send_task(
            INFER_TASK,
            args=[line["operation"], line["payload"], ENGINE_PRIORITY],
            task_id=task_id,
            queue=model_queue(model_id),
            priority=BROKER_PRIORITY,
            headers={"request_id": line.get("request_id") or "-"},
        )
        workers = [worker["hostname"] for worker in self.rt.liveness.workers(model_id)]
        flight = {**line, "task_id": task_id, "cursor": "0", "sent_at": time.time(), "workers": workers}
        flight.update(attempts=attempts, worker=None)
        self.client.hset(_in_flight_key(self.batch_id), line["index"], json.dumps(flight))
        self.client.expire(_in_flight_key(self.batch_id), KEY_TTL_SECONDS)
        self.flights[line["index"]] = flight
