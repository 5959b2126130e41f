"""``GET /internal/diagnostics`` on the running stack: what it counts moves with what the test does."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.conftest import CHAT_MODEL, ask
from tests.stack import wait_until


def diagnostics(base_url: str) -> dict:
    response = requests.get(f"{base_url}/internal/diagnostics", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.usefixtures("bash_manual")  # its ingest, started early in the session, has ended: the totals hold
def test_diagnostics_count_models_jobs_rag_and_errors(base_url, rag_url, jobs_url, client):
    before = diagnostics(base_url)
    assert before["system"]["python_version"] and before["system"]["mlx_version"]
    assert before["resources"]["memory_total_gb"] > 0 and before["uptime_seconds"] >= 0
    assert before["persistence"] == {"mongodb_connected": True, "redis_connected": True}
    chat = next(m for m in before["models"]["models"] if m["id"] == CHAT_MODEL)
    assert chat["status"] == "loaded" and chat["vram_usage_gb"] > 0
    assert CHAT_MODEL in before["queues"] and before["queues"][CHAT_MODEL]["max_queue_size"] > 0

    client.chat.completions.create(model=CHAT_MODEL, messages=ask("Hi"), max_tokens=2)
    too_long = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": ask("word " * 9000), "max_tokens": 2},
        timeout=60,
    )
    assert too_long.status_code == 400
    collection = f"diag-{uuid.uuid4().hex[:6]}"
    ingested = requests.post(
        f"{rag_url}/ingest",
        data={"collection": collection},
        files=[("files", ("a.txt", b"Diagnostics count this sentence."))],
        timeout=120,
    )
    assert ingested.status_code == 200, ingested.text
    job = requests.post(
        f"{jobs_url}/jobs",
        json={"model_id": CHAT_MODEL, "operation": "chat", "input": {"messages": ask("Hi"), "max_tokens": 1}},
        timeout=30,
    )
    assert job.status_code == 202

    after = diagnostics(base_url)
    chat_after = next(m for m in after["models"]["models"] if m["id"] == CHAT_MODEL)
    assert chat_after["request_count"] >= chat["request_count"] + 2
    assert after["rag"]["collections"] == before["rag"]["collections"] + 1
    assert after["rag"]["total_documents"] == before["rag"]["total_documents"] + 1
    assert after["rag"]["total_chunks"] == before["rag"]["total_chunks"] + 1
    assert sum(after["jobs"].values()) == sum(before["jobs"].values()) + 1
    assert after["errors"]["last_24h"] >= before["errors"]["last_24h"] + 1
    newest = after["errors"]["recent_errors"][0]
    assert newest["model"] == CHAT_MODEL and "context length" in newest["error"] and newest["timestamp"].endswith("Z")


def test_health_says_whether_rag_and_its_vector_store_are_served(base_url, control_worker):
    def served() -> bool:
        body = requests.get(f"{base_url}/health", timeout=10).json()
        return body["services"]["rag_enabled"] and body["persistence"]["vector_db_connected"]

    wait_until(served, 30, "the control worker's beat to reach /health")
    body = requests.get(f"{base_url}/health", timeout=10).json()
    assert body["services"] == {"fusion_enabled": True, "rag_enabled": True, "mcp_enabled": True}
