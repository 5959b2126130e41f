"""Every error a user can meet arrives in the OpenAI envelope with the right status, type, code and param."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, active_requests, ask, worker_pid
from tests.stack import wait_until


def envelope(response: requests.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"type", "message", "param", "code"}
    return body["error"]


def test_unknown_route_is_404_envelope(base_url):
    response = requests.get(f"{base_url}/v1/no-such-thing", timeout=10)
    assert response.status_code == 404
    assert envelope(response)["type"] == "not_found_error"


def test_wrong_method_is_405_envelope(base_url):
    response = requests.delete(f"{base_url}/v1/chat/completions", timeout=10)
    assert response.status_code == 405
    assert envelope(response)["code"] == "method_not_allowed"


def test_unknown_model_is_404_through_the_openai_client(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no/such-model", messages=ask("Hi"))
    assert caught.value.code == "model_not_found"
    assert caught.value.body["param"] == "model"


def test_malformed_json_is_400(base_url):
    response = requests.post(
        f"{base_url}/v1/chat/completions", data="{not json", headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 400
    assert envelope(response)["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "Hi"}]}, "model"),
        ({"model": CHAT_MODEL}, "messages"),
        ({"model": CHAT_MODEL, "messages": []}, "messages"),
        ({"model": CHAT_MODEL, "messages": [{"role": "wizard", "content": "Hi"}]}, "messages[0].role"),
        ({"model": CHAT_MODEL, "messages": [{"role": "user"}]}, "messages[0].content"),
        ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "temperature": 7}, "temperature"),
        ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0}, "max_tokens"),
        ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "n": 17}, "n"),
        ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 2}, "top_logprobs"),
        ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "logit_bias": {"x": 1}}, "logit_bias"),
        ({"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "top_k": -1}, "top_k"),
        (
            {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "stop": ["a", "b", "c", "d", "e"]},
            "stop",
        ),
    ],
)
def test_invalid_field_is_400_naming_the_field(base_url, body, param):
    response = requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 400
    error = envelope(response)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert param.split("[")[0].split(".")[0] in error["message"]


def test_context_length_exceeded_is_400_also_when_streaming(client):
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=CHAT_MODEL, messages=ask("Hi"), max_tokens=100_000, stream=stream)
        assert caught.value.code == "context_length_exceeded"


def test_a_request_whose_memory_would_not_fit_is_503_and_the_worker_goes_on(client, redis_client):
    """16 choices of 8,000 tokens need about 6 GB of KV cache, more than a worker may hold (4 GB): refused before
    anything is allocated, in the envelope, and the same worker answers the next request."""
    pid = worker_pid(redis_client, CHAT_MODEL)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=ask("Hi"), max_tokens=8000, n=16)
    assert caught.value.status_code == 503 and caught.value.code == "insufficient_vram"
    assert "KV cache" in caught.value.message
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=ask("Hi"), max_tokens=2)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert worker_pid(redis_client, CHAT_MODEL) == pid


def test_chat_with_an_embedding_model_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=EMBEDDING_MODEL, messages=ask("Hi"))
    assert caught.value.code == "unsupported_operation"


def test_registered_model_without_worker_is_503(client, base_url):
    from config import mongo
    from config.settings import Settings
    from models import registry

    mongo.connect(Settings.from_env())
    registry.request_load("test/no-worker", "lm", Path("/nonexistent"))
    registry.record_failed("test/no-worker", "made up by the test")  # failed: the supervisor leaves it alone
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="test/no-worker", messages=ask("Hi"))
    assert caught.value.status_code == 503
    assert caught.value.code == "model_unavailable"


def test_deadline_passed_is_504_and_frees_the_model(stack, base_url, hold):
    _service, impatient = stack.start_web("web-impatient", {"REQUEST_TIMEOUT_SECONDS": "1.5"})
    held = hold("deadline")  # never released before the end: only the deadline's cancellation can free the model
    response = requests.post(
        f"{impatient}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": ask("Write a long story about a dragon."), "max_tokens": 40},
        headers={"X-Request-ID": held.request_id},
        timeout=60,
    )
    assert response.status_code == 504
    assert envelope(response)["code"] == "timeout"
    wait_until(lambda: active_requests(base_url, CHAT_MODEL) == 0, 20, "the worker to drop the timed-out request")
