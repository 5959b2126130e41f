"""Session fixtures: real redis-server, a real Mongo-wire server, real model workers and gunicorn.

Workers are started once per session; tests share them and keep prompts short.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis
import requests

from tests.stack import ROOT, Stack, wait_until

CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    workdir = Path(tempfile.mkdtemp(prefix="mlxf-test-"))
    env = {
        "DATA_DIR": str(ROOT / ".data"),
        "MODELS_FILE": str(workdir / "models.json"),
        "LOG_LEVEL": "INFO",
        "REQUEST_TIMEOUT_SECONDS": "120",
        "WORKER_HEARTBEAT_TTL_SECONDS": "4",
        "PYTHONUNBUFFERED": "1",
    }
    catalog = json.loads((ROOT / "config" / "models.json").read_text())
    catalog["models"].append(
        {
            "id": "test/victim-lm",
            "type": "lm",
            "source": {
                "kind": "local-dir",
                "path": str(ROOT / ".data" / "models" / "HuggingFaceTB--SmolLM2-135M-Instruct"),
            },
            "context_length": 2048,
            "description": "a copy to kill",
        }
    )
    (workdir / "models.json").write_text(json.dumps(catalog))
    stack = Stack(workdir, env)
    os.environ.update(env)
    from models.prepare import main as prepare_models

    assert prepare_models([CHAT_MODEL, EMBEDDING_MODEL]) == 0
    try:
        stack.start_redis()
        stack.start_mongo()
        os.environ.update(stack.env)
        yield stack
    finally:
        stack.stop_all()
        print(f"\nservice logs kept in {workdir}")


@pytest.fixture(scope="session")
def redis_client(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.env["REDIS_URL"])


def worker_is_live(client: redis.Redis, model_id: str) -> bool:
    from tasks.liveness import Liveness

    return bool(Liveness(client, 4).workers(model_id))


@pytest.fixture(scope="session")
def workers(stack: Stack, redis_client: redis.Redis) -> dict[str, object]:
    chat = stack.start_worker(CHAT_MODEL, "worker-chat")
    embed = stack.start_worker(EMBEDDING_MODEL, "worker-embed")
    wait_until(lambda: worker_is_live(redis_client, CHAT_MODEL), 180, "the chat worker", chat.process)
    wait_until(lambda: worker_is_live(redis_client, EMBEDDING_MODEL), 180, "the embedding worker", embed.process)
    return {"chat": chat, "embed": embed}


@pytest.fixture(scope="session")
def base_url(stack: Stack, workers) -> str:
    _service, url = stack.start_web()
    return url


@pytest.fixture(scope="session")
def web_log(stack: Stack, base_url: str):
    return next(s for s in stack.services if s.name == "web")


@pytest.fixture()
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0, timeout=120)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def active_requests(base_url: str, model_id: str) -> int:
    stats = requests.get(f"{base_url}/v1/queue/stats", timeout=5).json()["queues"].get(model_id, {})
    return stats.get("active_requests", 0) + stats.get("queued_in_workers", 0)
