"""The Celery app of the control worker and of Flower (``celery -A tasks.control_app ...``).

The control worker consumes the I/O-bound queues (control, jobs, webhooks,
rag, fusion); their task modules are added to ``CONTROL_TASK_MODULES`` as those
features land.
"""

from config.settings import Settings
from tasks.celery_app import create_celery

CONTROL_TASK_MODULES: tuple[str, ...] = ()

app = create_celery(Settings.from_env(), include=CONTROL_TASK_MODULES)
