"""Celery tasks of the ``rag`` queue: RAG work answering on a reply channel, and RAG jobs (``mlxf.control_job``).

While a task works a beat thread sends ``alive`` events (so its waiter tells it
from a dead one), renews the leases of the documents it is writing or
deleting and, for a job, the job's lease.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from celery import current_app, shared_task

from config.errors import ApiError
from config.heap import release_free_memory
from config.logs import request_id_var
from config.redis_client import connect_redis
from config.settings import Settings
from models.handlers.base import RequestCancelled
from models.liveness import Liveness
from rag import document_store
from tasks import broker, job_store, staging
from tasks.dispatch import ALIVE, Dispatcher
from tasks.job_queue import RUN_CONTROL_JOB, job_creation
from tasks.progress import write_progress
from tasks.rag_queue import ANSWER, DELETE_DOCUMENT, DROP_COLLECTION, INGEST, RETRIEVE, SWEEP
from tasks.rag_service import IngestRequest, RagService
from tasks.replies import ReplyChannel

log = logging.getLogger(__name__)

ALIVE_SECONDS = 3.0


@cache
def service() -> RagService:
    settings = Settings.from_env()
    client = connect_redis(settings)
    liveness = Liveness(client, settings.worker_heartbeat_ttl_seconds)
    return RagService(settings, Dispatcher(settings, current_app, client, liveness))


@contextmanager
def beating(name: str, beat: Callable[[], None]) -> Iterator[list[str]]:
    """Runs ``beat`` every ``ALIVE_SECONDS`` and renews the leases of the document ids put in the yielded list."""
    working: list[str] = []
    stop = threading.Event()
    lease = service().settings.rag_lease_seconds

    def run() -> None:
        while not stop.wait(ALIVE_SECONDS):
            try:
                beat()
                document_store.renew(list(working), lease)
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("could not renew the leases of %s", name, exc_info=True)

    threading.Thread(target=run, name=f"alive-{name}", daemon=True).start()
    try:
        yield working
    finally:
        stop.set()


def _answer(task: Any, work: Callable[[ReplyChannel, list[str]], dict[str, Any]]) -> None:
    """Runs ``work`` with a reply channel and a list of documents whose leases stay renewed while it runs."""
    rag = service()
    settings = rag.settings
    task_id = task.request.id
    channel = ReplyChannel(rag.dispatcher.redis, task_id, settings.stream_maxlen, settings.stream_ttl_seconds)
    channel.publish({"type": "started", "worker": task.request.hostname or "control"})
    try:
        with beating(task_id, lambda: channel.publish({"type": ALIVE})) as working:
            result = work(channel, working)
    except ApiError as exc:
        channel.publish({"type": "error", "error": exc.to_dict()})
        return
    except Exception as exc:
        log.exception("rag task %s failed", task_id)
        error = ApiError(500, f"RAG work failed: {type(exc).__name__}: {exc}", code="rag_failed")
        channel.publish({"type": "error", "error": error.to_dict()})
        return
    channel.publish({"type": "done", "result": result})


def ingest_request(request: dict[str, Any]) -> IngestRequest:
    """The ingest a web request or job describes, with its staged files read (they stay staged)."""
    files = []
    for item in request["files"]:
        data = staging.read(service().dispatcher.redis, item["token"])
        if data is None:
            raise ApiError(
                400, f"File '{item['filename']}' expired before it was read", code="invalid_file", param="files"
            )
        files.append((item["filename"], data))
    return IngestRequest(
        collection=request["collection"],
        files=files,
        embedding_model=request["embedding_model"],
        chunk_size=request.get("chunk_size"),
        overlap=request.get("overlap"),
        metadata=request.get("metadata"),
        owner=request.get("owner"),
        sees=request.get("sees"),
        shared=bool(request.get("shared")),
        rerank_model=request.get("rerank_model"),
    )


@shared_task(name=INGEST, bind=True, ignore_result=True, acks_late=False)
def ingest(self, request: dict[str, Any]) -> None:
    try:
        _answer(
            self,
            lambda channel, working: service().ingest(
                ingest_request(request), request_id_var.get(), channel.publish, working
            ),
        )
    finally:
        release_free_memory()  # what extraction, chunking and the store's writes freed, back to the system


@shared_task(name=RETRIEVE, bind=True, ignore_result=True, acks_late=False)
def retrieve(self, query: dict[str, Any]) -> None:
    _answer(self, lambda _channel, _working: service().retrieve(query, request_id_var.get()))


@shared_task(name=ANSWER, bind=True, ignore_result=True, acks_late=False)
def answer(self, query: dict[str, Any]) -> None:
    _answer(self, lambda channel, _working: service().answer(query, request_id_var.get(), channel.cancelled))


@shared_task(name=DELETE_DOCUMENT, bind=True, ignore_result=True, acks_late=False)
def delete_document(self, collection: str, document_id: str) -> None:
    _answer(self, lambda _channel, working: service().delete_document(collection, document_id, working))


@shared_task(name=DROP_COLLECTION, bind=True, ignore_result=True, acks_late=False)
def drop_collection(self, name: str) -> None:
    _answer(self, lambda _channel, _working: service().drop_collection(name))


@shared_task(name=SWEEP, ignore_result=True)
def sweep() -> dict[str, int]:
    """Undoes ingests and finishes deletes that died midway (run on the control worker's beat)."""
    return service().sweep()


@shared_task(name=RUN_CONTROL_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_control_job(self, operation: str, payload: dict[str, Any], priority: str = "normal") -> None:
    """An MCP job of the control worker (``rag_query``, ``rag_ingest``): claimed, leased while it runs,
    cancelled at its next check, finished or failed in MongoDB like a model worker's job."""
    job_id = self.request.id
    rag = service()
    settings = rag.settings
    broker.taken(rag.dispatcher.redis, job_id)
    worker = self.request.hostname or "control"
    made = job_creation(self.request)
    token = job_store.claim_or_recreate(job_id, worker, settings.job_lease_seconds, made, payload)
    if token is None:
        log.info("job %s is no longer queued; this delivery does nothing", job_id)
        return
    if operation == "batch":
        from tasks import batches

        batches.start(job_id, token, payload)  # returns at once: the batch's rounds run as tasks of their own
        return
    if operation == "fusion":
        try:
            _start_fusion_job(job_id, token, payload)
        except ApiError as exc:
            _finish(job_id, token, operation, payload, error=(exc.message, exc.code or "job_failed"))
        return
    redis = rag.dispatcher.redis
    cancel = ReplyChannel(redis, job_id, settings.stream_maxlen, settings.stream_ttl_seconds)
    try:
        with beating(job_id, lambda: job_store.renew_lease(job_id, token, settings.job_lease_seconds)) as working:
            if operation == "rag_query":
                result = rag.answer(payload, request_id_var.get(), cancel.cancelled)
            elif operation == "rag_ingest":
                try:
                    result = _ingest_job(job_id, payload, working, cancel.cancelled)
                finally:
                    release_free_memory()
            else:
                raise ApiError(400, f"the control worker cannot run {operation!r} jobs", code="unsupported_operation")
    except RequestCancelled:
        log.info("job %s stopped: it was cancelled", job_id)
        _discard_files(operation, payload)
        return
    except ApiError as exc:
        _finish(job_id, token, operation, payload, error=(exc.message, exc.code or "job_failed"))
        return
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _finish(job_id, token, operation, payload, error=(f"{type(exc).__name__}: {exc}", "job_failed"))
        return
    _finish(job_id, token, operation, payload, result=result)


def _ingest_job(job_id: str, payload: dict[str, Any], working: list[str], cancelled: Callable[[], bool]) -> dict:
    redis = service().dispatcher.redis

    def report(event: dict[str, Any]) -> None:
        fraction = (event["file_number"] - 1 + event["chunks_embedded"] / max(event["chunks"], 1)) / event["files"]
        write_progress(redis, job_id, fraction, {k: v for k, v in event.items() if k != "type"})

    return service().ingest(ingest_request(payload), request_id_var.get(), report, working, cancelled)


def _start_fusion_job(job_id: str, token: str, payload: dict[str, Any]) -> None:
    """Starts a workflow run as the job and returns: no pool thread waits on the run's steps (they need threads
    of this same worker). The run's last task completes the job, its error callback fails it; the job's lease
    covers the run's whole time, so the reconciler takes it back only once that has passed or this worker died."""
    from tasks.fusion import canvas, workflow_store
    from tasks.fusion.definitions import for_run

    rag = service()
    settings = rag.settings
    chat_models = rag.dispatcher.liveness.models_of_type("lm")
    workflow = for_run(workflow_store.find(payload["workflow"]), payload.get("models") or {}, chat_models)
    job_store.renew_lease(job_id, token, settings.fusion_timeout_seconds + settings.job_lease_seconds)
    run_id = f"wf-{job_id.removeprefix('job-')[:16]}-{uuid.uuid4().hex[:6]}"
    canvas.start(
        current_app, workflow, payload, run_id, request_id_var.get(), (job_id, token), settings.fusion_timeout_seconds
    )


def _finish(
    job_id: str,
    token: str,
    operation: str,
    payload: dict[str, Any],
    result: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
) -> None:
    _discard_files(operation, payload)
    try:
        if error is None:
            job_store.complete(job_id, token, result or {})
        else:
            job_store.fail(job_id, token, error[0], error[1])
    except Exception:  # noqa: BLE001 - left processing, its lease runs out and the reconciler settles it
        log.exception("could not record the end of job %s", job_id)


def _discard_files(operation: str, payload: dict[str, Any]) -> None:
    if operation == "rag_ingest":
        staging.discard(service().dispatcher.redis, [item["token"] for item in payload.get("files", [])])
