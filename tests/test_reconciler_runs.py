"""The reconciler never runs twice at once, and sends a lost delivery's task again once, not at every run.

Against the session's real Redis (a database of its own, so the control worker's reconciler is not involved)
and the real Mongo-wire server (a database of its own); the reconciler runs in the test process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest

from config import mongo
from config.redis_client import connect_redis
from config.settings import Settings
from models.liveness import Liveness
from tasks.celery_app import create_celery
from tasks.job_store import now
from tasks.reconciler import LOCK_KEY, Reconciler
from tasks.webhooks import Delivery


@pytest.fixture()
def reconciler(stack) -> Iterator[Reconciler]:
    redis_url = stack.env["REDIS_URL"].rsplit("/", 1)[0] + "/3"
    mongo_url = stack.env["MONGODB_URL"].rsplit("/", 1)[0] + "/mlxf_reconciler"
    settings = Settings.from_env({**os.environ, "REDIS_URL": redis_url, "MONGODB_URL": mongo_url})
    mongo.connect(settings)
    client = connect_redis(settings)
    client.flushdb()
    yield Reconciler(settings, create_celery(settings), client, Liveness(client, 4))
    client.flushdb()
    mongo.connect(Settings.from_env())


def test_runs_never_overlap_and_an_overdue_delivery_is_sent_again_once(reconciler):
    Delivery(
        delivery_id="msg_overdue",
        webhook_id="wh-test",
        event="job.completed",
        event_id="job-x.job.completed",
        url="http://127.0.0.1:9/hook",
        body="{}",
        attempt_count=1,
        created_at=now() - timedelta(hours=1),
        next_attempt_at=now() - timedelta(hours=1),
    ).save(force_insert=True)
    client = reconciler.redis

    other_run = client.lock(LOCK_KEY, timeout=30)
    assert other_run.acquire(blocking=False)
    assert reconciler.run() is None  # another run holds the lock: this one does nothing
    assert client.llen("webhooks") == 0
    other_run.release()

    assert reconciler.run()["deliveries"] == 1
    assert reconciler.run()["deliveries"] == 0  # its task is on its way: not sent again at the next run
    assert client.llen("webhooks") == 1
    assert Delivery.objects(delivery_id="msg_overdue").first().next_attempt_at > now()
