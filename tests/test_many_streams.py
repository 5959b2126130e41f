"""256 streams open at once on one web process, and ``/health`` and ``/metrics`` still answer: a stream holds a
thread while it waits on Redis, and the web has threads to spare (``WEB_THREADS``). The first stream is held by
the test between two tokens, so the other 255 stay open behind it for as long as the test needs. They go to a
copy of the chat model that batches 32 requests, as ``make run`` serves it (``MAX_CONCURRENCY=32``): the
session's own serves one at a time."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import CHAT_MODEL_DIR, load_model, unload_model
from tests.stack import wait_until

STREAMS = 256
MODEL = "test/many-streams-lm"
BATCHED = 32
RESERVED = BATCHED + 4
"""Messages the worker's Celery consumer holds beyond what its engine has taken (up to its pool's size, the batch
and one more): on the worker, yet counted in no queue."""


@pytest.fixture()
def batched(base_url: str) -> Iterator[str]:
    loaded = load_model(base_url, str(CHAT_MODEL_DIR), MODEL, context_length=1024, max_concurrency=BATCHED)
    assert loaded.status_code == 200, loaded.text
    yield MODEL
    unload_model(base_url, MODEL, force=True)


def open_stream(url: str, request_id: str, max_tokens: int = 1) -> tuple[int, str]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    with requests.post(
        f"{url}/v1/chat/completions", json=body, headers={"X-Request-ID": request_id}, stream=True, timeout=600
    ) as response:
        return response.status_code, response.text


def waiting(url: str) -> int:
    stats = requests.get(f"{url}/v1/queue/stats", timeout=10).json()["queues"][MODEL]
    return stats["active_requests"] + stats["queued_in_workers"] + stats["pending_in_broker"]


def test_health_and_metrics_answer_while_256_streams_are_open(base_url, batched, hold):
    held = hold("many-streams")
    with ThreadPoolExecutor(STREAMS) as pool:
        first = pool.submit(open_stream, base_url, held.request_id, 3)  # held after its first token
        wait_until(lambda: first.done() or held.is_held(), 120, "the first stream to be held")
        assert not first.done(), first.result()
        others = [pool.submit(open_stream, base_url, f"{held.request_id}-{n}") for n in range(STREAMS - 1)]
        wait_until(lambda: waiting(base_url) >= STREAMS - RESERVED, 120, f"{STREAMS} open streams")
        health = requests.get(f"{base_url}/health", timeout=5)
        metrics = requests.get(f"{base_url}/metrics", timeout=5)
        assert health.status_code == 200 and health.json()["models_healthy"]
        assert metrics.status_code == 200 and "mlx_queue_depth" in metrics.text
        held.release()
        answers = [first.result(timeout=300)] + [one.result(timeout=300) for one in others]
    assert all(status == 200 and "[DONE]" in text for status, text in answers)
