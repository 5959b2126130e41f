"""Celery tasks of the ``rag`` queue: each runs one piece of RAG work and answers on its reply channel.

While a task works it sends ``alive`` events (so its waiter tells it from a
dead one) and renews the leases of the documents it is writing or deleting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import cache
from typing import Any

from celery import current_app, shared_task

from config.errors import ApiError
from config.logs import request_id_var
from config.redis_client import connect_redis
from config.settings import Settings
from models.liveness import Liveness
from rag import records
from tasks import staging
from tasks.dispatch import ALIVE, Dispatcher
from tasks.rag_queue import DELETE_DOCUMENT, DROP_COLLECTION, INGEST, RETRIEVE, SWEEP
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


def _answer(task: Any, work: Callable[[ReplyChannel, list[str]], dict[str, Any]]) -> None:
    """Runs ``work`` with a reply channel and a list of documents whose leases stay renewed while it runs."""
    rag = service()
    settings = rag.settings
    task_id = task.request.id
    channel = ReplyChannel(rag.dispatcher.redis, task_id, settings.stream_maxlen, settings.stream_ttl_seconds)
    channel.publish({"type": "started", "worker": task.request.hostname or "control"})
    working: list[str] = []
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(ALIVE_SECONDS):
            try:
                channel.publish({"type": ALIVE})
                records.renew(list(working), settings.rag_lease_seconds)
            except Exception:  # noqa: BLE001 - a missed beat is retried at the next one
                log.warning("could not renew rag leases", exc_info=True)

    beat = threading.Thread(target=keep_alive, name=f"alive-{task_id}", daemon=True)
    beat.start()
    try:
        result = work(channel, working)
    except ApiError as exc:
        channel.publish({"type": "error", "error": exc.to_dict()})
        return
    except Exception as exc:
        log.exception("rag task %s failed", task_id)
        error = ApiError(500, f"RAG work failed: {type(exc).__name__}: {exc}", code="rag_failed")
        channel.publish({"type": "error", "error": error.to_dict()})
        return
    finally:
        stop.set()
    channel.publish({"type": "done", "result": result})


@shared_task(name=INGEST, bind=True, ignore_result=True, acks_late=False)
def ingest(self, request: dict[str, Any]) -> None:
    def work(channel: ReplyChannel, working: list[str]) -> dict[str, Any]:
        rag = service()
        files = []
        for item in request["files"]:
            data = staging.take(rag.dispatcher.redis, item["token"])
            if data is None:
                raise ApiError(
                    400, f"File '{item['filename']}' expired before it was read", code="invalid_file", param="files"
                )
            files.append((item["filename"], data))
        ingest_request = IngestRequest(
            collection=request["collection"],
            files=files,
            embedding_model=request["embedding_model"],
            chunk_size=request.get("chunk_size"),
            overlap=request.get("overlap"),
            metadata=request.get("metadata"),
        )
        return rag.ingest(ingest_request, request_id_var.get(), channel.publish, working)

    _answer(self, work)


@shared_task(name=RETRIEVE, bind=True, ignore_result=True, acks_late=False)
def retrieve(self, query: dict[str, Any]) -> None:
    _answer(self, lambda _channel, _working: service().retrieve(query, request_id_var.get()))


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
