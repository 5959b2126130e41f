"""The platform under test, started on free ports with the tests' ``Stack``: Redis, Mongo, workers, API, control."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import redis
import requests

from bench import progress
from bench.defaults import CHAT_MODEL_DIR, DATA_DIR, DEFAULT_MODELS, ROOT, WEIGHTS_DIR
from models.liveness import Liveness
from tests.stack import Stack, catalog_with_on_demand, wait_until

CONTROL_QUEUES = "control,jobs,webhooks,rag,fusion"

STACK_ENV = {
    "DATA_DIR": str(DATA_DIR),
    "MODEL_ROOTS": f"{DATA_DIR / 'models'}:{WEIGHTS_DIR}",
    "REQUEST_TIMEOUT_SECONDS": "900",
    "LOAD_TIMEOUT_SECONDS": "300",
    "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    "RATE_LIMITS_ENABLED": "false",  # the benchmarks send far more than a client's share on purpose
    "PYTHONUNBUFFERED": "1",
    "MAX_CONCURRENCY": "32",
}
"""Settings of the platform under test: a worker batches up to 32 requests (as `make run` sets it), long
deadlines, and loopback webhooks (the jobs section's receiver runs on 127.0.0.1)."""


ON_DEMAND_MODEL = "bench/on-demand-chat"
"""An on-demand copy of the chat model in the stack's catalog: loaded by the first request that names it (never
unloaded for idleness during a run)."""


class PlatformStack:
    """The running platform: ``base_url`` for clients, ``redis`` for worker liveness, logs under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(
            self.workdir,
            {**STACK_ENV, "MODELS_FILE": str(catalog_with_on_demand(workdir, [ON_DEMAND_MODEL], CHAT_MODEL_DIR, 3600))},
        )
        self.base_url = ""
        self.redis: redis.Redis | None = None

    @property
    def env(self) -> dict[str, str]:
        """The environment every process of the stack gets on top of the runner's."""
        return self.stack.env

    def start(self) -> None:
        """Prepares the default models if needed, then starts every service and waits for warm workers."""
        progress.say("preparing the default models (once)")
        subprocess.run([sys.executable, "-m", "models.prepare", *DEFAULT_MODELS], cwd=ROOT, check=True)
        progress.say(f"starting redis and the Mongo-wire server (logs: {self.workdir})")
        self.stack.start_redis()
        self.stack.start_mongo()
        self.redis = redis.Redis.from_url(self.stack.env["REDIS_URL"])
        supervisor = self.stack.start("supervisor", [sys.executable, "-m", "models.supervisor"])
        for model_id in DEFAULT_MODELS:
            progress.say(f"waiting for a warm worker of {model_id}")
            wait_until(
                lambda m=model_id: self.worker_count(m) >= 1, 300, f"a worker for {model_id}", supervisor.process
            )
        progress.say("starting the API (gunicorn) and the control worker")
        _service, self.base_url = self.stack.start_web()
        self.stack.start(
            "control",
            [
                str(Path(sys.executable).with_name("celery")),
                "-A",
                "tasks.control_app",
                "worker",
                "--queues",
                CONTROL_QUEUES,
                "--pool",
                "threads",
                "--concurrency",
                "8",
                "--hostname",
                f"control-bench@{self.workdir.parent.name}",
                "--loglevel",
                "INFO",
            ],
        )
        wait_until(lambda: requests.get(f"{self.base_url}/health", timeout=5).ok, 120, "a healthy /health")
        progress.say(f"platform up at {self.base_url}")

    def worker_count(self, model_id: str) -> int:
        """How many live workers consume ``model_id``'s queue."""
        assert self.redis is not None, "stack not started"
        return len(Liveness(self.redis, 6).workers(model_id))

    def load(self, folder: Path, model_id: str, **options: object) -> dict:
        """``POST /v1/models/load`` of the language model in ``folder`` as ``model_id``."""
        body = {"model_path": str(folder), "model_type": "lm", "model_id": model_id, **options}
        response = requests.post(f"{self.base_url}/v1/models/load", json=body, timeout=600)
        response.raise_for_status()
        return response.json()

    def wait_for_workers(self, model_id: str, count: int) -> None:
        wait_until(lambda: self.worker_count(model_id) >= count, 300, f"{count} workers of {model_id}")

    def unload(self, model_id: str) -> None:
        requests.delete(f"{self.base_url}/v1/models/{model_id}/unload", params={"force": "true"}, timeout=120)

    def stop(self) -> None:
        """Stops every process of the stack; the logs stay in ``workdir``."""
        self.stack.stop_all()
        progress.say(f"platform stopped; logs kept in {self.workdir}")
