"""The Celery app of the control worker and of Flower (``celery -A tasks.control_app ...``).

The control worker consumes the I/O-bound queues (control, jobs, webhooks,
rag, fusion): job-event fan-out, webhook delivery, RAG work and, on the beat it
embeds (``-B``), the reconciler of jobs, deliveries and RAG records.
"""

from celery.signals import worker_init

from config.logs import configure_logging
from config.settings import Settings
from models import registry
from tasks import control_tasks, rag_queue, rag_tasks, request_ids  # noqa: F401 - importing them registers the tasks
from tasks.celery_app import create_celery

settings = Settings.from_env()
app = create_celery(settings)
app.conf.beat_schedule = {
    "reconcile-jobs-and-deliveries": {
        "task": "mlxf.reconcile",
        "schedule": settings.job_reconcile_seconds,
        "options": {"queue": "control", "expires": settings.job_reconcile_seconds * 2},
    },
    "sweep-rag-records": {
        "task": rag_queue.SWEEP,
        "schedule": settings.job_reconcile_seconds,
        "options": {"queue": "control", "expires": settings.job_reconcile_seconds * 2},
    },
}


@worker_init.connect
def _connect(**_kwargs) -> None:
    configure_logging(settings.log_level)
    registry.connect(settings)
