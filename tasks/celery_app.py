"""Builds the Celery app from settings; every process (web, control, model workers) uses this one factory."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from config.settings import Settings

CONTROL_QUEUES = ("control", "jobs", "webhooks", "rag", "fusion")


def model_queue(model_id: str) -> str:
    """The queue that the warm workers of one model consume."""
    return f"model.{model_id}"


def create_celery(settings: Settings) -> Celery:
    """A Celery app on the settings' Redis; a worker imports the modules of its tasks itself."""
    app = Celery("mlx_fusion", broker=settings.redis_url, backend=settings.redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_queue="control",
        task_queues=[Queue(name) for name in CONTROL_QUEUES],
        task_create_missing_queues=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "priority_steps": list(range(10)),
            "sep": ":",
            "queue_order_strategy": "priority",
            "visibility_timeout": 3600,
            # kombu's Redis transport waits this long in each BRPOP (1 s by default): a message still arrives at
            # once, but an idle consumer wakes every 10 s, not every second (`python -m bench idle`).
            "polling_interval": 10,
        },
        result_expires=3600,
        enable_utc=True,
    )
    app.set_default()
    return app
