"""Section: chaos. The stack as the Procfile runs it (every process behind ``config.restart_loop``), 4 streaming
clients and a job submitter at 2 a second with a webhook, while faults come at random moments: SIGKILL of the
chat model's worker, of the control worker, of the work worker and of the web process, Redis paused (SIGSTOP,
5 s) and killed, and the document store killed. Counts what users saw: jobs lost (must be 0), streams cut, webhook
events delivered twice with different bodies (must be 0), and how long each kind of fault kept the API from
answering a chat request.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import threading
import time
from collections import Counter, defaultdict

import psutil
import redis
import requests

from bench import progress
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, LOGS_DIR
from bench.report import SectionResult, Table
from bench.stack import STACK_ENV
from models.liveness import Liveness
from tests.receiver import Receiver
from tests.stack import PYTHON, Service, Stack, free_port, wait_until

NAME = "chaos"
TITLE = "Chaos: processes killed and Redis paused under streams and jobs"
STREAMERS = 4
JOBS_PER_SECOND = 2
FAULTS = ("model worker", "control worker", "work worker", "web", "redis paused 5 s", "redis killed", "mongo killed")
SERVED_AGAIN_WITHIN = 180.0


class ChaosStack:
    """The processes of ``make run`` on free ports, each behind the restart loop (the supervisor restarts the
    model's worker), with only the chat model warm."""

    def __init__(self) -> None:
        self.workdir = LOGS_DIR / f"{NAME}-{int(time.time())}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {**STACK_ENV, "AUTOSTART_CATALOG": "false", "MODEL_PATH": CHAT_MODEL, "JOB_RECONCILE_SECONDS": "2"}
        self.stack = Stack(self.workdir, env)
        self.services: dict[str, Service] = {}
        self.base_url = ""

    def _looped(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Service:
        service = self.stack.start(name, [PYTHON, "-m", "config.restart_loop", name, "--", *argv], extra_env)
        self.services[name] = service
        return service

    def start(self) -> None:
        port = free_port()
        (self.workdir / "redis").mkdir(exist_ok=True)
        redis_argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        self._looped("redis", [*redis_argv, "--appendonly", "yes", "--dir", str(self.workdir / "redis")])
        self.stack.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        self.redis = redis.Redis.from_url(self.stack.env["REDIS_URL"], socket_timeout=5)
        wait_until(self.redis.ping, 30, "redis-server")
        self.services["mongo"] = self.stack.start_mongo(restarted=True)
        supervisor = self._looped("models", [PYTHON, "-m", "models.supervisor"])
        wait_until(lambda: Liveness(self.redis, 10).workers(CHAT_MODEL), 300, "the chat worker", supervisor.process)
        self.services["control"] = self.stack.start_control("control", restarted=True, queues="control,webhooks")
        self.services["work"] = self.stack.start_control("work", restarted=True, queues="jobs,rag,fusion")
        web_port = free_port()
        gunicorn = os.path.join(os.path.dirname(PYTHON), "gunicorn")
        self._looped(
            "web",
            [gunicorn, "-c", "web/gunicorn_conf.py", "web:create_app()"],
            {"SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(web_port)},
        )
        self.base_url = f"http://127.0.0.1:{web_port}"
        wait_until(lambda: requests.get(f"{self.base_url}/health", timeout=5).ok, 120, "a healthy /health")

    def child_of(self, name: str) -> int:
        """The pid of the process the restart loop ``name`` runs now."""
        children = psutil.Process(self.services[name].process.pid).children()
        return children[0].pid

    def worker_pid(self) -> int:
        return int(Liveness(self.redis, 10).workers(CHAT_MODEL)[0]["pid"])

    def stop(self) -> None:
        self.stack.stop_all()


class Users:
    """The streaming clients and the job submitter; what each saw."""

    def __init__(self, base_url: str, receiver: Receiver) -> None:
        self.base_url, self.receiver = base_url, receiver
        self.running = threading.Event()
        self.streams: Counter[str] = Counter()
        self.jobs: dict[str, float] = {}
        self.refused: Counter[str] = Counter()
        self.lock = threading.Lock()

    def stream_forever(self, number: int) -> None:
        body = {"model": CHAT_MODEL, "max_tokens": 24, "temperature": 0, "stream": True}
        while self.running.is_set():
            messages = [{"role": "user", "content": f"Count from {number} to {number + 20}."}]
            outcome = _one_stream(f"{self.base_url}/v1/chat/completions", {**body, "messages": messages})
            with self.lock:
                self.streams[outcome] += 1
            if outcome != "completed":
                time.sleep(0.5)

    def submit_forever(self) -> None:
        number = 0
        while self.running.is_set():
            number += 1
            body = {
                "model_id": CHAT_MODEL,
                "operation": "chat",
                "input": {"messages": [{"role": "user", "content": f"Say {number}."}], "max_tokens": 4},
            }
            try:
                answer = requests.post(f"{self.base_url}/api/mcp/jobs", json=body, timeout=30)
                if answer.status_code == 202:
                    with self.lock:
                        self.jobs[answer.json()["job_id"]] = time.time()
                else:
                    self.refused[str(answer.status_code)] += 1
            except requests.RequestException as exc:
                self.refused[type(exc).__name__] += 1
            time.sleep(1 / JOBS_PER_SECOND)


def _one_stream(url: str, body: dict) -> str:
    """How one streamed request ended: completed, error envelope, cut (mid-answer), or not connected."""
    try:
        answer = requests.post(url, json=body, stream=True, timeout=120)
    except requests.ConnectionError:
        return "not connected (web down)"
    try:
        if answer.status_code != 200:
            return "error envelope" if "error" in answer.json() else "cut"
        last = [line for line in answer.iter_lines(decode_unicode=True) if line][-1:]
    except (requests.RequestException, ValueError):
        return "cut"
    if last == ["data: [DONE]"]:
        return "completed"
    if last and last[0].startswith("data: {") and "error" in json.loads(last[0][6:]):
        return "error envelope"
    return "cut"


def _serves(base_url: str) -> bool:
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
    try:
        return requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=10).status_code == 200
    except requests.RequestException:
        return False


def _fault(stack: ChaosStack, kind: str) -> None:
    if kind == "model worker":
        os.kill(stack.worker_pid(), signal.SIGKILL)
    elif kind in ("control worker", "work worker", "web", "redis killed", "mongo killed"):
        name = {"control worker": "control", "work worker": "work", "web": "web"}.get(kind, kind.split()[0])
        os.kill(stack.child_of(name), signal.SIGKILL)
    elif kind == "redis paused 5 s":
        pid = stack.child_of("redis")
        os.kill(pid, signal.SIGSTOP)
        time.sleep(5)
        os.kill(pid, signal.SIGCONT)


def run(context: BenchContext) -> SectionResult:
    result = SectionResult(NAME, TITLE)
    minutes = context.options.chaos_minutes
    stack, receiver = ChaosStack(), Receiver()
    served_again: dict[str, list[float]] = defaultdict(list)
    try:
        progress.say(f"starting the stack behind restart loops (logs: {stack.workdir})")
        stack.start()
        hook = requests.post(
            f"{stack.base_url}/api/mcp/webhooks",
            json={"url": receiver.url("/chaos"), "events": ["job.completed", "job.failed"]},
            timeout=30,
        )
        hook.raise_for_status()
        users = Users(stack.base_url, receiver)
        users.running.set()
        threads = [threading.Thread(target=users.stream_forever, args=(n,), daemon=True) for n in range(STREAMERS)]
        threads.append(threading.Thread(target=users.submit_forever, daemon=True))
        for thread in threads:
            thread.start()
        ends = time.monotonic() + minutes * 60
        faults = random.Random(5)
        order: list[str] = []
        while time.monotonic() < ends:
            time.sleep(faults.uniform(10, 25))
            if not order:
                order = faults.sample(FAULTS, len(FAULTS))
            kind = order.pop()
            progress.say(f"fault: {kind}")
            struck = time.monotonic()
            _fault(stack, kind)
            while not _serves(stack.base_url) and time.monotonic() - struck < SERVED_AGAIN_WITHIN:
                time.sleep(0.25)
            served_again[kind].append(time.monotonic() - struck)
        users.running.clear()
        for thread in threads:
            thread.join(180)
        progress.say(f"waiting for the {len(users.jobs)} accepted jobs to settle")
        statuses = _settle(stack.base_url, list(users.jobs))
    finally:
        stack.stop()
        receiver.close()
    bodies_of: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    events_of: Counter[str] = Counter()
    for received in receiver.at("/chaos"):
        job_id = received.payload["job"]["job_id"]
        bodies_of[(job_id, received.payload["event"])].add(received.body)
        events_of[job_id] += 1
    counted = Counter(status for status, _reason in statuses.values())
    reasons = Counter(reason for status, reason in statuses.values() if status == "failed")
    result.tables.append(
        Table(
            f"{minutes:g} minutes, {sum(len(v) for v in served_again.values())} faults",
            ["what", "count"],
            [
                ["jobs submitted (202)", len(users.jobs)],
                ["jobs refused at submission", sum(users.refused.values())],
                ["jobs completed", counted.get("completed", 0)],
                ["jobs failed, with a reason", counted.get("failed", 0)],
                ["jobs lost", sum(n for status, n in counted.items() if status not in ("completed", "failed"))],
                ["streams completed", users.streams["completed"]],
                ["streams ended with an error envelope", users.streams["error envelope"]],
                ["streams cut", users.streams["cut"]],
                ["stream requests not connected (web down)", users.streams["not connected (web down)"]],
                ["webhook events (job, event) delivered with one body", sum(len(b) == 1 for b in bodies_of.values())],
                ["delivered more than once with different bodies", sum(len(b) > 1 for b in bodies_of.values())],
                ["deliveries in all (a retried delivery counts again)", sum(events_of.values())],
                ["settled jobs whose event never arrived", sum(1 for j in statuses if events_of[j] == 0)],
            ],
        )
    )
    result.tables.append(
        Table(
            "Seconds until a chat request is answered again, per kind of fault",
            ["fault", "times", "p50", "p95"],
            [
                [kind, len(times), round(statistics.median(times), 1), round(_p95(times), 1)]
                for kind, times in sorted(served_again.items())
            ],
        )
    )
    if reasons:
        result.notes.append("failed jobs' reasons: " + "; ".join(f"{n} x {r}" for r, n in reasons.most_common()))
    if users.refused:
        result.notes.append("refused submissions: " + ", ".join(f"{n} x {k}" for k, n in users.refused.items()))
    result.notes.append(
        "a stream is cut when its connection ends with neither [DONE] nor an error event: a web process killed "
        "under it cuts it (its TCP connection dies with it)"
    )
    result.raw = {"statuses": dict(counted), "streams": dict(users.streams), "served_again": dict(served_again)}
    return result


def _settle(base_url: str, job_ids: list[str]) -> dict[str, tuple[str, str | None]]:
    """Each job's final status and failure reason, waiting up to 5 minutes for those still running."""
    deadline = time.monotonic() + 300
    settled: dict[str, tuple[str, str | None]] = {}
    while time.monotonic() < deadline and len(settled) < len(job_ids):
        for job_id in job_ids:
            if job_id in settled:
                continue
            try:
                job = requests.get(f"{base_url}/api/mcp/jobs/{job_id}", timeout=10)
            except requests.RequestException:
                continue
            if job.status_code == 200 and job.json().get("status") in ("completed", "failed", "cancelled"):
                settled[job_id] = (job.json()["status"], job.json().get("error_code"))
        time.sleep(1)
    for job_id in job_ids:  # a 404 is looked at again until the deadline: a store just restarted may heal
        settled.setdefault(job_id, ("lost", "never settled, or not found"))
    return settled


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
