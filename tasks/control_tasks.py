"""Tasks of the control worker: fan job events out to webhooks, deliver them, and reconcile state."""

from __future__ import annotations

import logging
from functools import cache

from celery import current_app, shared_task

from config.redis_client import connect_redis
from config.settings import Settings
from models.liveness import Liveness
from tasks import rag_tasks, webhooks
from tasks.job_events import FAN_OUT_TASK
from tasks.reconciler import DELIVER_TASK, Reconciler

log = logging.getLogger(__name__)


@cache
def _settings() -> Settings:
    return Settings.from_env()


@cache
def _reconciler() -> Reconciler:
    settings = _settings()
    client = connect_redis(settings)
    return Reconciler(settings, current_app, client, Liveness(client, settings.worker_heartbeat_ttl_seconds))


@shared_task(name=FAN_OUT_TASK, acks_late=True, ignore_result=True)
def fan_out(job_id: str, event_id: str) -> None:
    for delivery_id in webhooks.fan_out(job_id, event_id, _settings()):
        deliver.apply_async(args=[delivery_id, 1], queue="webhooks")


@shared_task(name=DELIVER_TASK, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def deliver(self, delivery_id: str, number: int) -> None:
    """Attempt ``number`` of a delivery; a failed one is retried by Celery after the backoff ``attempt`` chose."""
    delay = webhooks.attempt(delivery_id, number, _settings())
    if delay is not None:
        raise self.retry(args=[delivery_id, number + 1], countdown=delay, queue="webhooks")


@shared_task(name="mlxf.reconcile", ignore_result=True)
def reconcile() -> dict[str, int] | None:
    """The control worker's periodic pass (its beat): jobs and deliveries, then the RAG records' sweep."""
    try:
        return _reconciler().run()
    finally:
        try:
            rag_tasks.sweep()
        except Exception:  # noqa: BLE001 - MongoDB or the store briefly away: the next pass sweeps
            log.warning("the RAG sweep failed", exc_info=True)
