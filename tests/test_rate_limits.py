"""Rate limits per client and API group (specification section 8), on a web process with small limits, counted
in the stack's Redis: headers on every answer, 429 ``rate_limit_exceeded`` with ``Retry-After`` past the limit,
each group counted apart, and the OpenAI model reads never limited."""

from __future__ import annotations

import time

import requests

from tests.conftest import CHAT_MODEL

LIMITS = {
    "RATE_LIMITS_ENABLED": "true",
    "RATE_LIMIT_RAG": "3/minute",
    "RATE_LIMIT_MODELS": "2/minute",
    "RATE_LIMIT_JOBS": "100/minute",
    "RATE_LIMIT_JOB_READS": "2/minute",
}


def test_limits_hold_per_group_with_their_headers(stack, supervisor, control_worker):
    _service, url = stack.start_web("web-limited", LIMITS)
    answers = [requests.get(f"{url}/api/rag/collections", timeout=10) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["X-RateLimit-Limit"] for a in answers] == ["3", "3", "3"]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    assert int(answers[0].headers["X-RateLimit-Reset"]) > time.time() - 1

    refused = requests.get(f"{url}/api/rag/collections", timeout=10)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert 0 < int(refused.headers["Retry-After"]) <= 60

    hooks = requests.get(f"{url}/api/mcp/webhooks", timeout=10)
    assert hooks.status_code == 200 and hooks.headers["X-RateLimit-Limit"] == "100", "another group, counted apart"
    reads = [requests.get(f"{url}/api/mcp/jobs", timeout=10) for _ in range(3)]
    assert [r.status_code for r in reads] == [200, 200, 429], "reads of jobs have their own limit"
    assert reads[0].headers["X-RateLimit-Limit"] == "2"

    info = [requests.get(f"{url}/v1/models/{CHAT_MODEL}/info", timeout=10).status_code for _ in range(3)]
    assert info == [200, 200, 429]
    listing = requests.get(f"{url}/v1/models", timeout=10)
    assert listing.status_code == 200 and "X-RateLimit-Limit" not in listing.headers
