"""Health that cannot lie: every worker answers a tiny real call of its model through its own queue, regularly;
``/health`` and ``/v1/models`` judge it by that, and the supervisor restarts a worker that stops answering.

The hang is real: the worker process is stopped with SIGSTOP, so it is still up (its pid exists) but nothing
comes out of it, neither answers nor heartbeats. The session runs with short probe settings (conftest). That every
default model answers its probe is checked on the session lane's stack, which runs them all
(``tests/test_models_and_health.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal

import redis
import requests

from tests.conftest import EMBEDDING_MODEL, worker_is_live, worker_pid
from tests.stack import Service, process_exists, wait_until


def health_entry(base_url: str, model_id: str) -> tuple[int, dict]:
    response = requests.get(f"{base_url}/health", timeout=10)
    return response.status_code, next(m for m in response.json()["models"]["models"] if m["id"] == model_id)


def verdict(base_url: str, model_id: str) -> str | None:
    return (health_entry(base_url, model_id)[1]["probe"] or {}).get("verdict")


def model_status(base_url: str, model_id: str) -> str:
    return requests.get(f"{base_url}/v1/models/{model_id}/info", timeout=10).json()["status"]


def test_a_hung_worker_shows_unhealthy_and_is_restarted(
    base_url: str, redis_client: redis.Redis, supervisor: Service, spare_chat: str
):
    probed = spare_chat
    restarted = f"restarting the worker of {probed}: unresponsive for"
    restarts_before = supervisor.log().count(restarted)
    wait_until(lambda: verdict(base_url, probed) == "answering", 60, "the probed model's first answer")
    hung = worker_pid(redis_client, probed)
    os.kill(hung, signal.SIGSTOP)
    try:
        wait_until(lambda: model_status(base_url, probed) != "loaded", 30, "the hung model to stop showing loaded")
        assert process_exists(hung)  # still up: only its answers stopped
        wait_until(
            lambda: worker_is_live(redis_client, probed) and worker_pid(redis_client, probed) != hung,
            120,
            "the supervisor to restart the hung worker",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung, signal.SIGCONT)
    assert not process_exists(hung)
    assert supervisor.log().count(restarted) == restarts_before + 1
    wait_until(lambda: verdict(base_url, probed) == "answering", 60, "the restarted worker to answer")
    assert model_status(base_url, probed) == "loaded"


def test_a_request_answered_stands_for_a_probe(base_url: str, client):
    """A model that answered a real request within its probe interval is not probed: the answer proved it."""
    client.embeddings.create(model=EMBEDDING_MODEL, input=["proof of life"])
    wait_until(
        lambda: (health_entry(base_url, EMBEDDING_MODEL)[1]["probe"] or {}).get("answered_by") == "request",
        10,
        "the answered request to count as the model's last answer",
    )
    probe = health_entry(base_url, EMBEDDING_MODEL)[1]["probe"]
    assert probe["verdict"] == "answering" and probe["age_seconds"] < 10, probe
