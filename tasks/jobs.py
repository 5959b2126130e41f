"""The MCP job task that model workers run, and the Celery signals that move each job through its states.

``task_prerun`` claims the job (queued -> processing, with a lease),
``task_success`` and ``task_failure`` finish it (-> completed | failed). Each
move is a compare-and-set in ``tasks.job_store`` that stores its event in the
job's outbox in the same write. A message for a job that is no longer queued
(cancelled, or already run: a redelivery) claims nothing and the task does
nothing, so job tasks are safe to run twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import shared_task
from celery.signals import task_failure, task_prerun, task_success
from pymongo.errors import ConnectionFailure

from config.errors import ApiError
from config.logs import request_id_var
from config.settings import Settings
from tasks import broker, job_store
from tasks.job_queue import RUN_JOB, job_creation
from tasks.key_usage import add_tokens, usage_tokens
from tasks.serving import current, serve_job

log = logging.getLogger(__name__)


@shared_task(name=RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(self, operation: str, payload: dict[str, Any], priority: str = "normal") -> dict[str, Any] | None:
    token = getattr(self.request, "job_claim", None)
    if not token:
        return None
    return serve_job(self.request.id, token, operation, payload, request_id_var.get(), job_store.PRIORITIES[priority])


def _is_job(task: Any) -> bool:
    return getattr(task, "name", None) == RUN_JOB


@task_prerun.connect
def _claim(task_id: str | None = None, task: Any = None, **_kwargs: Any) -> None:
    if not _is_job(task):
        return
    task.request.job_claim = None
    runtime = current()
    _taken(runtime.redis, task_id)
    stalled_for = runtime.engine.stalled_seconds()
    if stalled_for > runtime.settings.engine_stall_seconds / 2:
        # A hung engine must not take jobs back: left queued, the job is sent again to a worker that can run it.
        log.warning("job %s left queued: this worker's engine has made no progress for %.0fs", task_id, stalled_for)
        return
    try:
        lease = runtime.settings.job_lease_seconds
        made, job_input = job_creation(task.request), task.request.args[1]
        token = job_store.claim_or_recreate(task_id, runtime.hostname, lease, made, job_input)
    except Exception:  # noqa: BLE001 - unclaimed, the job stays queued and the reconciler sends it again
        log.exception("could not claim job %s", task_id)
        return
    if token is None:
        log.info("job %s is no longer queued; this delivery does nothing", task_id)
        return
    task.request.job_claim = token
    log.info("job %s processing", task_id)


@task_success.connect
def _completed(sender: Any = None, result: Any = None, **_kwargs: Any) -> None:
    if not _is_job(sender) or not getattr(sender.request, "job_claim", None):
        return
    job_id = sender.request.id
    if (result or {}).get("finish_reason") == "cancelled":
        log.info("job %s stopped: it was cancelled", job_id)
        return
    token = sender.request.job_claim
    try:
        stored = _while_reconnecting(lambda: job_store.complete(job_id, token, result), current().settings)
    except ConnectionFailure:
        # Never failed for the store's absence: its lease runs out and the reconciler sends it again.
        log.exception("could not reach MongoDB to store the result of job %s; it will run again", job_id)
        return
    except Exception as exc:  # noqa: BLE001 - e.g. a result over MongoDB's document size: fail the job instead
        log.exception("could not store the result of job %s", job_id)
        _fail(job_id, token, f"The result could not be stored: {type(exc).__name__}: {exc}"[:1000], "result_not_stored")
        return
    if not stored:
        log.info("job %s finished but is no longer this run's (cancelled or taken over)", job_id)
        return
    _count_tokens(sender.request, result)


def _count_tokens(request: Any, result: Any) -> None:
    """The job's tokens, for the key that submitted it (its ``tokens_per_day`` quota and usage)."""
    owner = (job_creation(request) or {}).get("owner")
    try:
        add_tokens(current().redis, owner, usage_tokens((result or {}).get("usage")))
    except Exception:  # noqa: BLE001 - usage is never worth failing a finished job
        log.warning("could not count the tokens of job %s", request.id, exc_info=True)


@task_failure.connect
def _failed(sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_kw) -> None:
    token = getattr(getattr(sender, "request", None), "job_claim", None)
    if not _is_job(sender) or not token:
        return
    if isinstance(exception, ApiError):
        message, code = exception.message, exception.code or "job_failed"
    else:
        message, code = f"Model inference failed: {type(exception).__name__}: {exception}", "inference_failed"
    _fail(task_id, token, message, code)


def _taken(client: Any, job_id: str) -> None:
    try:
        broker.taken(client, job_id)
    except Exception:  # noqa: BLE001 - a stale entry only delays a resend: the reconciler checks the queue's length
        log.warning("could not take job %s off the waiting index", job_id, exc_info=True)


def _while_reconnecting(write: Callable[[], bool], settings: Settings) -> bool:
    """``write()``, tried again with backoff while MongoDB cannot be reached, for up to a job lease (the moves
    are compare-and-set: a write that landed before its answer was lost does nothing the second time)."""
    deadline = time.monotonic() + settings.job_lease_seconds
    pause = 0.25
    while True:
        try:
            return write()
        except ConnectionFailure:
            if time.monotonic() + pause > deadline:
                raise
            log.warning("MongoDB unreachable while storing a job's outcome; trying again in %.2fs", pause)
            time.sleep(pause)
            pause = min(2 * pause, 5.0)


def _fail(job_id: str, token: str, message: str, code: str) -> None:
    try:
        _while_reconnecting(lambda: job_store.fail(job_id, token, message, code), current().settings)
    except Exception:  # noqa: BLE001 - left processing; its lease runs out and the reconciler settles it
        log.exception("could not record the failure of job %s", job_id)
