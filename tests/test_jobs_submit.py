"""Submitting MCP jobs: accepted with 202, run by the model's worker, looked up, and refused when invalid."""

from __future__ import annotations

import requests

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, ask, submit_job, wait_for_job


def job_count(jobs_url: str) -> int:
    return requests.get(f"{jobs_url}/jobs", params={"limit": 1}, timeout=10).json()["total"]


def test_chat_job_runs_and_matches_the_synchronous_answer(jobs_url, client):
    response = submit_job(
        jobs_url,
        CHAT_MODEL,
        "chat",
        {"messages": ask("What is the capital of France?"), "max_tokens": 8, "temperature": 0},
        metadata={"user_id": "user123"},
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["job_id"].startswith("job-")
    assert accepted["status"] == "queued"
    assert accepted["created_at"].endswith("Z")
    assert accepted["position_in_queue"] == 0  # nothing else waits for this model
    assert accepted["estimated_completion_ms"] > 0
    assert accepted["request_id"] == response.headers["X-Request-ID"]

    job = wait_for_job(jobs_url, accepted["job_id"])
    assert job["status"] == "completed", job
    assert job["metadata"] == {"user_id": "user123"}
    assert job["started_at"] and job["completed_at"] and job["latency_ms"] >= 0
    assert job["attempts"] == 1
    assert job["submitted_request_id"] == accepted["request_id"]
    usage = job["result"]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    direct = client.chat.completions.create(
        model=CHAT_MODEL, messages=ask("What is the capital of France?"), max_tokens=8, temperature=0
    )
    assert job["result"]["content"] == direct.choices[0].message.content
    assert usage["completion_tokens"] == direct.usage.completion_tokens


def test_completion_and_embed_jobs(jobs_url):
    completion = submit_job(jobs_url, CHAT_MODEL, "completion", {"prompt": "One, two, three,", "max_tokens": 4})
    embed = submit_job(jobs_url, EMBEDDING_MODEL, "embed", {"input": ["a cat", "a dog"]})
    assert completion.status_code == 202 and embed.status_code == 202
    done = wait_for_job(jobs_url, completion.json()["job_id"])
    assert done["status"] == "completed" and done["result"]["usage"]["completion_tokens"] >= 1
    vectors = wait_for_job(jobs_url, embed.json()["job_id"])["result"]["embeddings"]
    assert len(vectors) == 2 and len(vectors[0]) == 384


def test_invalid_jobs_are_refused_naming_the_field_and_leave_nothing_behind(jobs_url):
    before = job_count(jobs_url)
    cases = [
        ({"operation": "chat", "input": {"messages": ask("hi")}}, 400, "model_id"),
        ({"model_id": CHAT_MODEL, "operation": "dance", "input": {}}, 400, "operation"),
        ({"model_id": CHAT_MODEL, "operation": "chat"}, 400, "input"),
        ({"model_id": CHAT_MODEL, "operation": "chat", "input": {"messages": []}}, 400, "input.messages"),
        (
            {"model_id": CHAT_MODEL, "operation": "chat", "input": {"messages": [{"role": "wizard", "content": "x"}]}},
            400,
            "input.messages[0].role",
        ),
        ({"model_id": CHAT_MODEL, "operation": "embed", "input": {"input": "x"}}, 400, "operation"),
        ({"model_id": CHAT_MODEL, "operation": "fusion", "input": {}}, 400, "input.workflow"),
        ({"model_id": CHAT_MODEL, "operation": "rag_query", "input": {}}, 400, "input.query"),
        (
            {"model_id": CHAT_MODEL, "operation": "chat", "input": {"messages": ask("x")}, "priority": "urgent"},
            400,
            "priority",
        ),
        (
            {
                "model_id": CHAT_MODEL,
                "operation": "chat",
                "input": {"messages": ask("x")},
                "callback_url": "http://10.1.2.3/hook",
            },
            400,
            "callback_url",
        ),
        ({"model_id": "no/such-model", "operation": "chat", "input": {"messages": ask("x")}}, 404, "model_id"),
        (
            {"model_id": CHAT_MODEL, "operation": "chat", "input": {"messages": ask("x")}, "metadata": {"$set": 1}},
            400,
            "metadata",
        ),
        (
            {
                "model_id": CHAT_MODEL,
                "operation": "chat",
                "input": {"messages": ask("x")},
                "callback_url": "http://[::1",
            },
            400,
            "callback_url",
        ),
    ]
    for body, status, param in cases:
        response = requests.post(f"{jobs_url}/jobs", json=body, timeout=10)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (body, error)
        assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert job_count(jobs_url) == before


def test_unknown_job_is_404_in_the_envelope(jobs_url):
    for response in (
        requests.get(f"{jobs_url}/jobs/job-missing", timeout=10),
        requests.delete(f"{jobs_url}/jobs/job-missing", timeout=10),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"
