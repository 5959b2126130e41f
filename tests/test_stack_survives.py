"""The stack survives its parts: Redis killed under an open stream ends it with a final ``error`` event naming
Redis (503 ``service_unavailable``), never a cut connection; Redis runs behind the Procfile's restart loop, comes
back on its own, and the web and the model worker reconnect without being restarted.

A small stack of its own (Redis behind ``config.restart_loop``, a chat worker, a web process); the session's
Mongo-wire server with a database of its own. The stream is held between two tokens (``Hold``) when Redis dies.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

from tests.conftest import CHAT_MODEL, Hold, active_requests, ask, submit_job, wait_for_job, worker_is_live, worker_pid
from tests.stack import PYTHON, Stack, free_port, process_exists, wait_until


@pytest.fixture()
def small(stack: Stack, tmp_path: Path):
    workdir = tmp_path
    mongo = stack.env["MONGODB_URL"].rsplit("/", 1)[0] + "/mlxf_survive"
    small = Stack(workdir, {**stack.env, "MONGODB_URL": mongo, "AUTOSTART_CATALOG": "false"})
    try:
        yield small
    finally:
        small.stop_all()


def redis_pid(client: redis.Redis) -> int:
    return int(client.info("server")["process_id"])


def chat_ok(base: str) -> bool:
    try:
        answer = requests.post(
            f"{base}/v1/chat/completions",
            json={"model": CHAT_MODEL, "messages": ask("Hi"), "max_tokens": 2},
            timeout=30,
        )
    except requests.RequestException:
        return False
    return answer.status_code == 200


def test_redis_killed_under_a_stream_ends_it_with_an_error_event_and_everything_reconnects(small: Stack):
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    small.start("redis", [PYTHON, "-m", "config.restart_loop", "redis", "--", *argv])
    small.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis(port=port, socket_timeout=5)
    wait_until(lambda: _pings(client), 20, "redis-server behind the restart loop")
    worker = small.start_worker(CHAT_MODEL, "survive-worker")
    wait_until(lambda: worker_is_live(client, CHAT_MODEL), 120, "the chat worker", worker.process)
    # started by hand, without a supervisor: its catalog entry says a language model needs no PyTorch
    assert "libtorch" not in Path(f"/proc/{worker.process.pid}/maps").read_text()
    _web, base = small.start_web("survive-web", {"DEFAULT_CHAT_MODEL": CHAT_MODEL})

    held = Hold(client, "redis-dies")
    stream = requests.post(
        f"{base}/v1/chat/completions",
        json={
            "model": CHAT_MODEL,
            "messages": ask("Count to ten."),
            "max_tokens": 20,
            "stream": True,
            "temperature": 0,
        },
        headers={"X-Request-ID": held.request_id},
        stream=True,
        timeout=60,
    )
    assert stream.status_code == 200
    held.wait_held()
    first = redis_pid(client)
    os.kill(first, signal.SIGKILL)

    events = [json.loads(line[6:]) for line in stream.iter_lines(decode_unicode=True) if line.startswith("data: {")]
    error = events[-1]["error"]
    assert error["code"] == "service_unavailable" and "Redis" in error["message"], events[-1]
    assert any(e.get("choices") for e in events[:-1]), "the stream had begun before Redis died"

    wait_until(lambda: _pings(client) and redis_pid(client) != first, 30, "the restart loop to start Redis again")
    wait_until(lambda: worker_is_live(client, CHAT_MODEL), 60, "the worker's heartbeat to come back")
    wait_until(lambda: chat_ok(base), 90, "a chat completion through the same web and worker")
    assert worker.process.poll() is None and "starting it again" in small.services[0].log()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_the_workers_of_a_killed_supervisor_shut_down(small: Stack):
    """The restart loop starts a killed supervisor again, with new workers: the old ones must not stay behind."""
    small.start_redis()
    client = redis.Redis.from_url(small.env["REDIS_URL"])
    supervisor = small.start("survive-supervisor", [PYTHON, "-m", "models.supervisor"], {"MODEL_PATH": CHAT_MODEL})
    wait_until(lambda: worker_is_live(client, CHAT_MODEL), 120, "the supervised worker", supervisor.process)
    orphan = worker_pid(client, CHAT_MODEL)
    os.kill(supervisor.process.pid, signal.SIGKILL)  # the supervisor alone, not its process group
    wait_until(lambda: not process_exists(orphan), 60, "the orphaned worker to shut down")
    assert not worker_is_live(client, CHAT_MODEL)
    assert "the supervisor (pid" in supervisor.log() and "is gone; this worker shuts down" in supervisor.log()


SOCKET_TIMEOUT_SECONDS = 4
"""The small stack's Redis socket timeout (``REDIS_SOCKET_TIMEOUT_SECONDS``, 10 s by default): the pause below
passes it three times over, as 30 s would pass the default, in 12 s of the suite instead of 30."""


def test_redis_paused_past_every_socket_timeout_loses_no_job_and_cuts_no_stream(small: Stack):
    """SIGSTOP of Redis for three times every client's socket timeout while 8 streams and 4 jobs generate in one
    batch: the engine never waits on Redis (its deltas and cancel checks go through the worker's relay), so every
    job completes and every stream either completes or ends with the 503 envelope, never cut."""
    small.env["REDIS_SOCKET_TIMEOUT_SECONDS"] = str(SOCKET_TIMEOUT_SECONDS)
    small.start_redis()
    client = redis.Redis.from_url(small.env["REDIS_URL"], socket_timeout=60)
    small.start_control()
    worker = small.start_worker(CHAT_MODEL, "paused-worker", {"MAX_CONCURRENCY": "12"})
    wait_until(lambda: worker_is_live(client, CHAT_MODEL), 120, "the chat worker", worker.process)
    _web, base = small.start_web("paused-web")
    held = Hold(client, "paused-first")
    request_ids = [held.request_id, *(f"paused-{n}" for n in range(1, 12))]
    body = {"model": CHAT_MODEL, "messages": ask("Count to fifty."), "max_tokens": 48, "temperature": 0}
    outcomes: dict[str, list] = {}

    def stream(request_id: str) -> None:
        try:
            answer = requests.post(
                f"{base}/v1/chat/completions",
                json={**body, "stream": True},
                headers={"X-Request-ID": request_id},
                stream=True,
                timeout=180,
            )
            if answer.status_code != 200:  # an error before the first token keeps its status: the body is the envelope
                outcomes[request_id] = [f"data: {answer.text}"]
                return
            outcomes[request_id] = [line for line in answer.iter_lines(decode_unicode=True) if line]
        except requests.RequestException as exc:
            outcomes[request_id] = [f"cut: {exc}"]

    threads = [threading.Thread(target=stream, args=(request_id,)) for request_id in request_ids[:8]]
    threads[0].start()
    held.wait_held()  # the engine waits at the first stream's first token; the others queue in the worker
    for thread in threads[1:]:
        thread.start()
    jobs = []
    for request_id in request_ids[8:]:
        submitted = submit_job(f"{base}/api/mcp", CHAT_MODEL, "chat", body, request_id=request_id)
        assert submitted.status_code == 202, submitted.text
        jobs.append(submitted.json()["job_id"])
    wait_until(lambda: active_requests(base, CHAT_MODEL) == 12, 120, "all twelve requests in the worker")
    pid = redis_pid(client)
    held.release_and_wait()  # the twelve generate together from here, while Redis is stopped
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3 * SOCKET_TIMEOUT_SECONDS)  # the fault itself: Redis stays stopped this long
    finally:
        os.kill(pid, signal.SIGCONT)
    for thread in threads:
        thread.join(180)
    for request_id, lines in outcomes.items():
        assert lines and not lines[-1].startswith("cut"), (request_id, lines[-1:])
        if lines[-1] == "data: [DONE]":
            continue
        error = json.loads(lines[-1][6:])["error"]
        assert error["code"] in ("service_unavailable", "worker_lost"), (request_id, error)
    assert len(outcomes) == 8
    for job_id in jobs:
        job = wait_for_job(f"{base}/api/mcp", job_id, timeout=180)
        assert job["status"] == "completed", (job.get("error"), job.get("error_code"), job)
