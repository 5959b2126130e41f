"""Jobs are not lost when a model worker is killed mid-job or Redis restarts without persistence."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pymongo
import redis
import requests

from tests.conftest import (
    CHAT_MODEL_DIR,
    CONTROL_QUEUES,
    EMBEDDING_MODEL,
    WORK_QUEUES,
    ask,
    job_status,
    load_model,
    submit_job,
    unload_model,
    wait_for_job,
    worker_is_live,
    worker_pid,
)
from tests.stack import wait_until


def test_a_job_whose_worker_is_killed_runs_again_and_completes(jobs_url, redis_client, receiver, hold, spare_chat):
    model_id = spare_chat
    held = hold("job-victim")
    response = submit_job(
        jobs_url,
        model_id,
        "chat",
        {"messages": ask("Count from 1 to 100."), "max_tokens": 20, "temperature": 0},
        request_id=held.request_id,
        callback_url=receiver.url("/victim"),
    )
    job_id = response.json()["job_id"]
    held.wait_held()
    assert job_status(jobs_url, job_id)["status"] == "processing"
    killed = worker_pid(redis_client, model_id)
    os.kill(killed, signal.SIGKILL)
    held.release()  # the second run may go on

    job = wait_for_job(jobs_url, job_id, timeout=180)
    assert job["status"] == "completed", job
    assert job["attempts"] == 2
    assert job["result"]["usage"]["completion_tokens"] >= 1
    assert worker_is_live(redis_client, model_id) and worker_pid(redis_client, model_id) != killed
    wait_until(lambda: "job.completed" in receiver.events("/victim"), 30, "the completion callback")
    assert sorted(receiver.events("/victim")) == sorted(
        ["job.queued", "job.processing", "job.queued", "job.processing", "job.completed"]
    )


def test_queued_jobs_survive_a_redis_restart(small_stack, receiver):
    small = small_stack
    redis_service = small.start_redis()
    port = int(small.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    worker = small.start_worker(EMBEDDING_MODEL, "restart-worker")
    client = redis.Redis(port=port)
    # While the worker loads. As the Procfile runs it: Celery's consumer can die of a connection lost in the
    # middle of an ack (kombu's restore of unacked messages fails), and the restart loop starts it again.
    small.start_control("restart-control", restarted=True)
    _web, base = small.start_web("restart-web")
    wait_until(lambda: worker_is_live(client, EMBEDDING_MODEL), 120, "the embedding worker", worker.process)
    worker.stop()  # the model stays registered: jobs are accepted and wait for a worker
    jobs_url = f"{base}/api/mcp"
    hook = requests.post(
        f"{jobs_url}/webhooks", json={"url": receiver.url("/restart"), "events": ["job.completed"]}, timeout=10
    )
    assert hook.status_code == 201
    job_ids = []
    for index in range(3):
        response = submit_job(jobs_url, EMBEDDING_MODEL, "embed", {"input": f"survivor {index}"})
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["job_id"])
    assert client.llen(f"model.{EMBEDDING_MODEL}:5") == 3

    redis_service.stop()
    small.start_redis(port)
    assert client.llen(f"model.{EMBEDDING_MODEL}:5") == 0  # the broker lost the messages
    assert all(job_status(jobs_url, job_id)["status"] == "queued" for job_id in job_ids)

    small.start_worker(EMBEDDING_MODEL, "restart-worker-2")
    for job_id in job_ids:
        assert wait_for_job(jobs_url, job_id, timeout=120)["status"] == "completed"
    wait_until(
        lambda: {r.payload["job"]["job_id"] for r in receiver.at("/restart")} >= set(job_ids),
        60,
        "job.completed webhooks after the restart",
    )


def test_jobs_of_a_model_unloaded_by_force_fail_with_the_reason(jobs_url, base_url, hold):
    model_id = "test/jobs-doomed"
    assert load_model(base_url, str(CHAT_MODEL_DIR), model_id, context_length=2048).status_code == 200
    held = hold("doomed")  # never released: the first job runs until the forced unload
    job_ids = []
    for index in range(3):
        response = submit_job(
            jobs_url,
            model_id,
            "chat",
            {"messages": ask("Count to 100."), "max_tokens": 20, "temperature": 0},
            request_id=held.request_id if index == 0 else None,
        )
        assert response.status_code == 202
        job_ids.append(response.json()["job_id"])
        if index == 0:  # the others come once the first holds the engine: one waits in the worker, one in the broker
            held.wait_held()
    assert job_status(jobs_url, job_ids[0])["status"] == "processing"
    assert unload_model(base_url, model_id).status_code == 409  # jobs wait for it
    assert unload_model(base_url, model_id, force=True).status_code == 200

    for job_id in job_ids:
        job = wait_for_job(jobs_url, job_id, timeout=90)
        assert job["status"] == "failed", job
        assert job["error_code"] == "model_unloaded" and model_id in job["error"]
    assert submit_job(jobs_url, model_id, "chat", {"messages": ask("hi")}).status_code == 404


def test_a_job_the_store_lost_after_its_202_runs_from_its_message(small_stack, receiver):
    """A document store that loses its last write on a crash (acknowledged, not yet on disk) could leave a 202
    without its job. The job's message carries what recreates it: the worker that takes the message inserts
    the job again under its id, runs it, and its callback arrives. (The loss is made by deleting the job's
    document while its model has no worker, so that nothing else can have touched it.)"""
    small = small_stack
    small.start_redis()
    client = redis.Redis.from_url(small.env["REDIS_URL"])
    worker = small.start_worker(EMBEDDING_MODEL, "lost-worker")
    small.start_control("lost-control")  # while the worker loads
    _web, base = small.start_web("lost-web")
    wait_until(lambda: worker_is_live(client, EMBEDDING_MODEL), 120, "the embedding worker", worker.process)
    worker.stop()  # the model stays registered: the job is accepted and waits for a worker
    jobs_url = f"{base}/api/mcp"
    accepted = submit_job(
        jobs_url,
        EMBEDDING_MODEL,
        "embed",
        {"input": "kept in the message"},
        callback_url=receiver.url("/lost"),
        metadata={"kept": "yes"},
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    database = pymongo.MongoClient(small.env["MONGODB_URL"]).get_default_database()
    assert database["jobs"].delete_one({"_id": job_id}).deleted_count == 1
    assert requests.get(f"{jobs_url}/jobs/{job_id}", timeout=10).status_code == 404

    small.start_worker(EMBEDDING_MODEL, "lost-worker-2")
    job = wait_for_job(jobs_url, job_id, timeout=120)
    assert job["status"] == "completed" and job["metadata"] == {"kept": "yes"}
    assert len(job["result"]["embeddings"][0]) == 384
    wait_until(lambda: "job.completed" in receiver.events("/lost", job_id), 60, "the job's callback")


def test_the_document_store_killed_under_submissions_loses_no_accepted_job(small_stack, receiver):
    """SIGKILL of the Mongo-wire server (behind the Procfile's restart loop) while 40 jobs are submitted at 5 a
    second and their webhook deliveries are being recorded: every job answered 202 completes, and its
    ``job.completed`` arrives, never twice with different bodies, the job accepted just before the kill included
    (SecantusDB without ``--sync-on-commit`` lost it). Submissions while it is down are refused (503), never
    accepted and lost."""
    small = small_stack
    small.env["JOB_LEASE_SECONDS"] = "5"  # a job running when the store died is taken back at its lease end: 5 s
    mongo = small.start_mongo(restarted=True)
    small.start_redis()
    client = redis.Redis.from_url(small.env["REDIS_URL"])
    worker = small.start_worker(EMBEDDING_MODEL, "mongo-kill-worker")
    small.start_control("mongo-kill-control", restarted=True, queues=CONTROL_QUEUES)  # while the worker loads
    small.start_control("mongo-kill-work", restarted=True, queues=WORK_QUEUES)
    _web, base = small.start_web("mongo-kill-web")
    wait_until(lambda: worker_is_live(client, EMBEDDING_MODEL), 120, "the embedding worker", worker.process)
    jobs_url = f"{base}/api/mcp"
    hook = requests.post(
        f"{jobs_url}/webhooks", json={"url": receiver.url("/mongo-kill"), "events": ["job.completed"]}, timeout=10
    )
    assert hook.status_code == 201, hook.text
    answers: list[requests.Response | str] = []
    for number in range(40):
        try:
            answers.append(submit_job(jobs_url, EMBEDDING_MODEL, "embed", {"input": f"under fire {number}"}))
        except requests.RequestException as exc:
            answers.append(f"{type(exc).__name__}")
        if number == 14:  # the job just accepted was written milliseconds ago
            server = psutil.Process(mongo.process.pid).children()[0]
            os.kill(server.pid, signal.SIGKILL)
        time.sleep(0.2)  # 5 submissions a second: the load, not a wait for anything
    accepted = [a.json()["job_id"] for a in answers if isinstance(a, requests.Response) and a.status_code == 202]
    refused = [a for a in answers if not (isinstance(a, requests.Response) and a.status_code == 202)]
    assert all(isinstance(a, requests.Response) and a.status_code == 503 for a in refused), refused
    assert len(accepted) >= 15 and "starting it again" in mongo.log(), "the store was killed and came back"
    for job_id in accepted:
        assert wait_for_job(jobs_url, job_id, timeout=180)["status"] == "completed", job_id
    wait_until(
        lambda: {r.payload["job"]["job_id"] for r in receiver.at("/mongo-kill")} >= set(accepted),
        120,
        "every accepted job's job.completed",
    )
    bodies: dict[str, set[bytes]] = {}
    for delivery in receiver.at("/mongo-kill"):
        bodies.setdefault(delivery.headers["webhook-id"], set()).add(delivery.body)
    assert all(len(seen) == 1 for seen in bodies.values()), "a delivery came twice with different bodies"
