"""A dependency that cannot be reached is the client's 503 ``service_unavailable`` naming it, never a 500: a web
process of the session's stack started against a Redis or a MongoDB port where nothing listens."""

from __future__ import annotations

import requests

from tests.conftest import CHAT_MODEL, ask
from tests.stack import free_port


def test_without_redis_requests_are_503_naming_redis(stack, supervisor):
    _service, url = stack.start_web("web-no-redis", {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    answer = requests.post(
        f"{url}/v1/chat/completions", json={"model": CHAT_MODEL, "messages": ask("Hi"), "max_tokens": 2}, timeout=60
    )
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "service_unavailable" and error["type"] == "service_unavailable_error"
    assert "Redis" in error["message"]


def test_without_mongodb_requests_are_503_naming_mongodb(stack, supervisor):
    _service, url = stack.start_web("web-no-mongo", {"MONGODB_URL": f"mongodb://127.0.0.1:{free_port()}/mlx_fusion"})
    answer = requests.get(f"{url}/v1/models", timeout=60)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "service_unavailable" and "MongoDB" in answer.json()["error"]["message"]
