"""The Celery app of the control worker and of Flower (``celery -A tasks.control_app ...``).

The control worker consumes the I/O-bound queues (control, jobs, webhooks,
rag, fusion): job-event fan-out, webhook delivery, RAG work and, on the beat it
embeds (``-B``), the reconciler of jobs, deliveries and RAG records.
"""

import os
import threading
import time

from celery.signals import celeryd_after_setup, worker_init

from config import mongo
from config.logs import configure_logging
from config.redis_client import connect_redis
from config.settings import Settings
from models.liveness import Liveness
from tasks import batches, control_tasks, rag_queue, rag_tasks, request_ids  # noqa: F401 - importing them registers the tasks
from tasks.celery_app import create_celery
from tasks.fusion import tasks as fusion_tasks  # noqa: F401 - registers the fusion tasks

settings = Settings.from_env()
app = create_celery(settings)
# One task per period: it reconciles jobs and deliveries, then sweeps RAG records (two tasks cost the beat, the
# worker, Redis and Flower twice the messages at rest).
app.conf.beat_schedule = {
    "reconcile-jobs-deliveries-and-rag-records": {
        "task": "mlxf.reconcile",
        "schedule": settings.job_reconcile_seconds,
        "options": {"queue": "control", "expires": settings.job_reconcile_seconds * 2},
    },
}


@worker_init.connect
def _connect(**_kwargs) -> None:
    configure_logging(settings.log_level)
    mongo.connect(settings)


@celeryd_after_setup.connect
def _beat(sender: str, **_kwargs) -> None:
    """Beats while the process lives, so that the reconciler tells a running control job from a lost one, with
    whether the vector store answers (for ``/health``)."""
    liveness = Liveness(connect_redis(settings), settings.worker_heartbeat_ttl_seconds)
    interval = settings.worker_heartbeat_ttl_seconds / 3

    def beat() -> None:
        while True:
            try:
                report = {"pid": os.getpid(), "vector_store_connected": rag_tasks.service().store.ping()}
                liveness.beat_process("control", sender, report)
            except Exception:  # noqa: BLE001 - the next beat tries again
                pass
            time.sleep(interval)

    threading.Thread(target=beat, name="control-heartbeat", daemon=True).start()
