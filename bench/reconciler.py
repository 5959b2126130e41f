"""Section: what a reconciler pass costs with a deep queue of big job messages (1,000 of 1 MB: transcriptions).

A real redis-server of its own holds the messages in kombu's priority lists and the waiting-jobs index the
platform keeps beside them. The pass asks which of the jobs still wait, as ``tasks.reconciler`` does (the index
and one length per queue), against reading and parsing every message body (how it asked before).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import uuid

import redis

from bench import progress
from bench.context import BenchContext
from bench.report import SectionResult, Table
from tasks import broker

NAME = "reconciler"
TITLE = "Reconciler pass over a deep queue of big job messages"
QUEUE = "model.bench-transcriber"
RUNS = 5


def _message(job_id: str, size: int) -> str:
    """A kombu message as the Redis transport stores it (headers with the task id, a body of ``size`` bytes)."""
    return json.dumps({"body": "A" * size, "headers": {"id": job_id, "task": "mlxf.job"}, "properties": {}})


def _scan_bodies(client: redis.Redis, queue: str) -> set[str]:
    """The job ids in the queue, read from every message body: what the reconciler did before the index."""
    ids: set[str] = set()
    for key in broker.queue_keys(queue):
        for raw in client.lrange(key, 0, -1):
            ids.add(json.loads(raw)["headers"]["id"])
    return ids


def _index_pass(client: redis.Redis, queue: str) -> set[str]:
    if not broker.queue_length(client, queue):
        return set()
    return {job_id for job_id, where in broker.waiting_jobs(client).items() if where == queue}


def _timed(what, runs: int) -> tuple[float, set[str]]:
    times, found = [], set()
    for _ in range(runs):
        started = time.perf_counter()
        found = what()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), found


def run(context: BenchContext) -> SectionResult:
    result = SectionResult(NAME, TITLE)
    count = 100 if context.options.quick else 1000
    size = 1_000_000
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, socket_timeout=120)
        _wait_for(client)
        progress.say(f"filling a queue with {count} job messages of {size / 1e6:g} MB")
        job_ids = [f"job-{uuid.uuid4().hex}" for _ in range(count)]
        for start in range(0, count, 50):
            pipe = client.pipeline(transaction=False)
            for job_id in job_ids[start : start + 50]:
                pipe.lpush(broker.queue_keys(QUEUE)[0], _message(job_id, size))
                broker.sent(pipe, job_id, QUEUE)
            pipe.execute()
        index_ms, from_index = _timed(lambda: _index_pass(client, QUEUE), RUNS)
        scan_ms, from_bodies = _timed(lambda: _scan_bodies(client, QUEUE), RUNS if not context.options.quick else 1)
        if from_index != from_bodies or len(from_index) != count:
            raise RuntimeError("the index and the bodies disagree on which jobs wait")
    finally:
        server.terminate()
        server.wait(30)
    result.tables.append(
        Table(
            f"Which of {count} queued jobs of {size / 1e6:g} MB still wait (median of {RUNS} passes)",
            ["how", "ms per pass", "bytes read from Redis"],
            [
                ["waiting-jobs index + queue length (now)", round(index_ms, 2), f"~{count * 45:,}"],
                ["every message body (before)", round(scan_ms, 1), f"~{count * size:,}"],
            ],
        )
    )
    result.raw = {"jobs": count, "message_bytes": size, "index_ms": index_ms, "scan_ms": scan_ms}
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(client: redis.Redis) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("redis-server did not start")
