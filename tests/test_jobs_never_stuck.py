"""No job stays stuck and no event is lost: a stored event whose announcement was lost still goes out; queued
jobs of a failed model fail with its error; a hung engine shows in /health, its job loses its lease and is taken
back (the hung worker does not take it again); the supervisor restarts a hung worker.

One small stack of its own (Redis, a chat worker, web, control, later a supervisor) with short stall and lease
settings. The engine is "hung" deterministically by holding a generation between two tokens (``hold``).
"""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from pathlib import Path

import pymongo
import pytest
import redis
import requests

from tests.conftest import CHAT_MODEL, Hold, ask, job_status, submit_job, wait_for_job, worker_is_live, worker_pid
from tests.stack import PYTHON, Stack, wait_until

SHORT = {"messages": ask("Say hi."), "max_tokens": 2, "temperature": 0}
STALL = {
    "ENGINE_STALL_SECONDS": "2",
    "JOB_LEASE_SECONDS": "3",
    "JOB_MAX_ATTEMPTS": "2",
    "AUTOSTART_CATALOG": "false",
}


@pytest.fixture()
def stall_stack(stack: Stack, tmp_path: Path):
    workdir = tmp_path
    mongo = stack.env["MONGODB_URL"].rsplit("/", 1)[0] + "/mlxf_stall"
    small = Stack(workdir, {**stack.env, **STALL, "MONGODB_URL": mongo})
    try:
        yield small
    finally:
        small.stop_all()


def worker_pids(client: redis.Redis, model_id: str) -> set[int]:
    from models.liveness import Liveness

    return {worker["pid"] for worker in Liveness(client, 4).workers(model_id)}


def health_of(base: str, model_id: str) -> tuple[int, dict]:
    response = requests.get(f"{base}/health", timeout=10)
    entry = next(m for m in response.json()["models"]["models"] if m["id"] == model_id)
    return response.status_code, entry


def test_events_survive_a_lost_announcement_and_a_hung_engine_is_seen_and_taken_back(stall_stack, receiver):
    small = stall_stack
    small.start_redis()
    client = redis.Redis.from_url(small.env["REDIS_URL"])  # this stack's own Redis: its holds are set there
    worker = small.start_worker(CHAT_MODEL, "stall-worker", {"DEFAULT_CHAT_MODEL": CHAT_MODEL})
    _web, base = small.start_web("stall-web", {"DEFAULT_CHAT_MODEL": CHAT_MODEL})  # while the worker loads
    wait_until(lambda: worker_is_live(client, CHAT_MODEL), 120, "the chat worker", worker.process)
    jobs_url = f"{base}/api/mcp"
    hook = requests.post(
        f"{jobs_url}/webhooks",
        json={
            "url": receiver.url("/outbox"),
            "events": list(("job.queued", "job.processing", "job.completed", "job.failed")),
        },
        timeout=10,
    )
    assert hook.status_code == 201

    # 1. No control worker yet: the job runs, its three events are stored and announced, and the announcements
    #    are then lost with the broker's webhooks queue. The control worker's reconciler announces them again.
    first = submit_job(jobs_url, CHAT_MODEL, "chat", SHORT).json()["job_id"]
    assert wait_for_job(jobs_url, first)["status"] == "completed"
    wait_until(lambda: client.llen("webhooks") == 3, 10, "the three announcements in the broker")
    client.delete("webhooks")
    small.start_control("stall-control")
    wait_until(
        lambda: sorted(receiver.events("/outbox", first)) == ["job.completed", "job.processing", "job.queued"],
        60,
        "the stored events to be delivered after their announcements were lost",
    )

    # 2. Jobs queued for a model that then fails for good (here: no supervisor, the registry is told so by hand,
    #    as a worker that cannot load does) fail with the model's error instead of waiting forever.
    registry = pymongo.MongoClient(small.env["MONGODB_URL"]).get_default_database()["models"]
    registry.insert_one(
        {"_id": "test/never-loads", "model_type": "lm", "path": "/nowhere", "created": 0, "tags": []}
        | {"desired": "loaded", "status": "loading", "updated_at": datetime.now(UTC)}
    )
    doomed = submit_job(jobs_url, "test/never-loads", "chat", SHORT)
    assert doomed.status_code == 202, doomed.text
    registry.update_one({"_id": "test/never-loads"}, {"$set": {"status": "failed", "error": "weights missing"}})
    job = wait_for_job(jobs_url, doomed.json()["job_id"], timeout=60)
    assert job["status"] == "failed" and job["error_code"] == "model_failed", job
    assert "weights missing" in job["error"]

    # 3. A hung engine: held between two tokens, it makes no progress. /health says so, the job's lease is no
    #    longer renewed and runs out: the job is queued again, and the hung worker does not take it back.
    hung = Hold(client, "hung-engine")
    hung_job = submit_job(jobs_url, CHAT_MODEL, "chat", {**SHORT, "max_tokens": 20}, request_id=hung.request_id)
    hung_job = hung_job.json()["job_id"]
    hung.wait_held()
    wait_until(lambda: health_of(base, CHAT_MODEL)[1]["engine_stalled"], 30, "/health to show the stalled engine")
    status, entry = health_of(base, CHAT_MODEL)
    assert status == 503 and entry["stalled_seconds"] >= 2
    assert requests.get(f"{base}/health", timeout=10).json()["model_status"] == "unresponsive"

    wait_until(
        lambda: (job := job_status(jobs_url, hung_job))["status"] == "queued" and job["attempts"] == 1,
        60,
        "the job to be taken back when its lease ran out",
    )
    wait_until(lambda: receiver.events("/outbox", hung_job).count("job.queued") == 2, 30, "job.queued sent again")
    wait_until(lambda: f"job {hung_job} left queued" in worker.log(), 30, "the hung worker to refuse the job")
    assert job_status(jobs_url, hung_job)["status"] == "queued"

    # 4. Under a supervisor, a worker whose engine hangs is restarted, and the jobs it held run again.
    killed = worker_pid(client, CHAT_MODEL)
    worker.stop(signal.SIGKILL)
    hung.release()
    # Its worker loads while the killed worker's heartbeat expires; then the supervised worker is the only one.
    supervisor = small.start("stall-supervisor", [PYTHON, "-m", "models.supervisor"])
    wait_until(
        lambda: (pids := worker_pids(client, CHAT_MODEL)) and killed not in pids,
        120,
        "the supervised worker, and the killed worker's heartbeat to expire",
        supervisor.process,
    )
    job = wait_for_job(jobs_url, hung_job, timeout=120)
    assert job["status"] == "completed" and job["attempts"] == 2, job

    stuck = Hold(client, "hung-supervised")
    job_id = submit_job(jobs_url, CHAT_MODEL, "chat", {**SHORT, "max_tokens": 20}, request_id=stuck.request_id)
    job_id = job_id.json()["job_id"]
    stuck.wait_held()
    hung_pid = worker_pid(client, CHAT_MODEL)
    wait_until(
        lambda: "its engine stopped making progress" in supervisor.log(), 60, "the supervisor to restart the worker"
    )
    stuck.release()
    wait_until(
        lambda: worker_is_live(client, CHAT_MODEL) and worker_pid(client, CHAT_MODEL) != hung_pid,
        120,
        "the restarted worker",
    )
    job = wait_for_job(jobs_url, job_id, timeout=120)
    assert job["status"] == "completed" and job["attempts"] == 2, job
    assert job["result"]["usage"]["completion_tokens"] >= 1
