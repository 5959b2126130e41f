"""One request ID follows a request: header in and out, ``request_id`` in bodies, the worker's log lines."""

from __future__ import annotations

import json
import uuid

import requests

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, ask
from tests.stack import wait_until


def test_given_request_id_is_echoed_in_header_body_and_worker_log(base_url, supervisor):
    request_id = f"trace-{uuid.uuid4().hex}"
    response = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": ask("Hi"), "max_tokens": 2},
        headers={"X-Request-ID": request_id},
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    assert response.json()["request_id"] == request_id
    wait_until(lambda: f"[request_id={request_id}]" in supervisor.log(), 10, "the worker's log line")


def test_request_id_is_generated_when_missing(base_url):
    response = requests.get(f"{base_url}/v1/models", timeout=10)
    generated = response.headers["X-Request-ID"]
    assert generated and response.json()["request_id"] == generated
    other = requests.get(f"{base_url}/v1/models", timeout=10).headers["X-Request-ID"]
    assert other != generated


def test_request_id_in_every_stream_chunk(base_url):
    request_id = f"stream-{uuid.uuid4().hex}"
    response = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": ask("Hi"), "max_tokens": 3, "stream": True},
        headers={"X-Request-ID": request_id},
        stream=True,
        timeout=60,
    )
    assert response.headers["X-Request-ID"] == request_id
    lines = [line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: {")]  # no keep-alive
    assert lines and all(json.loads(line[6:])["request_id"] == request_id for line in lines)


def test_request_id_in_errors_and_embeddings(base_url):
    request_id = f"err-{uuid.uuid4().hex}"
    missing = requests.get(f"{base_url}/nowhere", headers={"X-Request-ID": request_id}, timeout=10)
    assert missing.headers["X-Request-ID"] == request_id and missing.json()["request_id"] == request_id
    embedded = requests.post(
        f"{base_url}/v1/embeddings",
        json={"model": EMBEDDING_MODEL, "input": "x"},
        headers={"X-Request-ID": request_id},
        timeout=60,
    )
    assert embedded.json()["request_id"] == request_id
