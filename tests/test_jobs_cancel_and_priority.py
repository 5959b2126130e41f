"""Cancelling queued and running jobs, priorities honoured on a busy model, and the per-model queue limit (also
against submissions at once).

The running job is held between two tokens by the test (``hold``), so every step happens while it runs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis
import requests

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, ask, job_status, submit_job, wait_for_job, worker_is_live
from tests.stack import wait_until

LONG = {"messages": ask("Count from 1 to 1000, one number per line."), "max_tokens": 40, "temperature": 0}
SHORT = {"messages": ask("Say hi."), "max_tokens": 2, "temperature": 0}


def submit(jobs_url: str, job_input: dict, request_id: str | None = None, **extra) -> str:
    response = submit_job(jobs_url, CHAT_MODEL, "chat", job_input, request_id=request_id, **extra)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def cancel(jobs_url: str, job_id: str) -> requests.Response:
    return requests.delete(f"{jobs_url}/jobs/{job_id}", timeout=10)


def test_cancel_a_queued_and_a_running_job(jobs_url, receiver, supervisor, hold):
    held = hold("cancel-running")  # never released: only the cancellation can stop this job
    running = submit(jobs_url, LONG, request_id=held.request_id)
    held.wait_held()
    ready = submit(jobs_url, SHORT)  # taken by the worker's second slot, waits behind the running job
    wait_until(lambda: job_status(jobs_url, ready)["status"] == "processing", 30, "the second slot to take a job")
    waiting = submit(jobs_url, SHORT, callback_url=receiver.url("/cancelled-queued"))  # stays in the broker
    assert job_status(jobs_url, running)["status"] == "processing"
    assert job_status(jobs_url, waiting)["status"] == "queued"

    answer = cancel(jobs_url, waiting)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled" and answer.json()["cancelled_at"].endswith("Z")

    answer = cancel(jobs_url, running)
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    wait_until(lambda: f"job {running} stopped: it was cancelled" in supervisor.log(), 30, "the worker to stop")
    assert wait_for_job(jobs_url, ready, timeout=60)["status"] == "completed"  # the model was freed

    assert job_status(jobs_url, running)["status"] == "cancelled"
    cancelled = job_status(jobs_url, waiting)
    assert cancelled["status"] == "cancelled" and cancelled["attempts"] == 0 and "started_at" not in cancelled
    wait_until(lambda: "job.cancelled" in receiver.events("/cancelled-queued"), 30, "job.cancelled callback")
    assert sorted(receiver.events("/cancelled-queued")) == ["job.cancelled", "job.queued"]

    for finished in (running, ready):
        again = cancel(jobs_url, finished)
        assert again.status_code == 409 and again.json()["error"]["type"] == "conflict_error"


def test_high_priority_jobs_overtake_low_ones_and_a_full_queue_answers_429(jobs_url, stack, hold):
    _service, small_url = stack.start_web("web-small-queue", {"JOB_QUEUE_LIMIT": "3"})
    held = hold("priority-blocker")
    blocker = submit(jobs_url, LONG, request_id=held.request_id)
    held.wait_held()
    lows = [submit(jobs_url, SHORT, priority="low") for _ in range(3)]
    high = submit(jobs_url, SHORT, priority="high")
    assert job_status(jobs_url, high)["position_in_queue"] == 0

    refused = submit_job(f"{small_url}/api/mcp", CHAT_MODEL, "chat", SHORT)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "queue_full" and refused.json()["error"]["type"] == "rate_limit_error"

    held.release()
    finished = {job_id: wait_for_job(jobs_url, job_id) for job_id in [blocker, *lows, high]}
    assert all(job["status"] == "completed" for job in finished.values())
    order = sorted(finished, key=lambda job_id: finished[job_id]["completed_at"])
    # the first low job may already wait in the worker's second slot when the high one comes; the others cannot
    assert order.index(high) < order.index(lows[1]) and order.index(high) < order.index(lows[2]), order


def test_submissions_at_once_never_overfill_the_queue(small_stack):
    """Nothing consumes the model's queue (its worker stopped; the model stays registered): of 24 submissions at
    once to a queue of three, three wait and 21 are 429, and no refused job is left behind. (Counted before
    inserting, as the limit once was, some of 24 overshot it here.)"""
    small_stack.start_redis()
    worker = small_stack.start_worker(EMBEDDING_MODEL, "limit-worker")
    client = redis.Redis.from_url(small_stack.env["REDIS_URL"])
    _web, base = small_stack.start_web("limit-web", {"JOB_QUEUE_LIMIT": "3"})  # while the worker loads
    wait_until(lambda: worker_is_live(client, EMBEDDING_MODEL), 120, "the embedding worker", worker.process)
    worker.stop()
    jobs_url = f"{base}/api/mcp"

    def embed(n: int) -> requests.Response:
        return submit_job(jobs_url, EMBEDDING_MODEL, "embed", {"input": f"at once {n}"})

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(embed, range(24)))
    assert sorted(a.status_code for a in answers) == [202] * 3 + [429] * 21, [a.status_code for a in answers]
    assert all(a.json()["error"]["code"] == "queue_full" for a in answers if a.status_code == 429)
    waiting = {"model_id": EMBEDDING_MODEL, "status": "queued"}
    listed = requests.get(f"{jobs_url}/jobs", params=waiting, timeout=10).json()
    accepted = {a.json()["job_id"] for a in answers if a.status_code == 202}
    assert {job["job_id"] for job in listed["jobs"]} == accepted and listed["total"] == 3
