"""API keys: a web of the session's stack started with ``API_KEYS`` refuses the API without one of them and
serves it with one, to the OpenAI client (``Authorization: Bearer``) and the Anthropic client (``x-api-key``)."""

from __future__ import annotations

import anthropic
import openai
import pytest
import requests

from tests.conftest import CHAT_MODEL, ask
from tests.used_keys import remember

KEYS = "sk-test-first-0f6c1a,sk-test-second-9b2d4e"
FIRST, SECOND = KEYS.split(",")
remember(FIRST, SECOND)


@pytest.fixture(scope="module")
def locked(stack, supervisor) -> tuple[str, object]:
    service, base = stack.start_web("web-api-keys", {"API_KEYS": KEYS})
    return base, service


def test_the_api_needs_a_valid_key(locked):
    base, _service = locked
    for path in ("/v1/models", "/api/mcp/jobs", "/api/rag/collections", "/internal/diagnostics"):
        missing = requests.get(f"{base}{path}", timeout=10)
        assert missing.status_code == 401, path
        assert missing.json()["error"]["type"] == "authentication_error"
        assert missing.json()["error"]["code"] == "missing_api_key"
        wrong = requests.get(f"{base}{path}", headers={"Authorization": "Bearer sk-nope"}, timeout=10)
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        good = requests.get(f"{base}{path}", headers={"Authorization": f"Bearer {SECOND}"}, timeout=10)
        assert good.status_code == 200, (path, good.text)
    assert requests.get(f"{base}/health", timeout=10).status_code != 401  # probes stay open by default


def test_official_clients_with_their_keys(locked):
    base, _service = locked
    chat = openai.OpenAI(base_url=f"{base}/v1", api_key=FIRST, max_retries=0, timeout=60)
    assert chat.chat.completions.create(model=CHAT_MODEL, messages=ask("Hi"), max_tokens=2).choices[0].message
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="sk-nope", max_retries=0).models.list()
    claude = anthropic.Anthropic(base_url=base, api_key=SECOND, max_retries=0, timeout=60)
    assert claude.messages.create(model=CHAT_MODEL, max_tokens=2, messages=ask("Hi")).content
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=base, api_key="sk-nope", max_retries=0).messages.create(
            model=CHAT_MODEL, max_tokens=2, messages=ask("Hi")
        )


def test_keys_are_never_logged(locked):
    base, service = locked
    requests.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {FIRST}"}, timeout=10)
    requests.get(f"{base}/v1/models", headers={"x-api-key": "sk-wrong-key-123"}, timeout=10)
    log = service.log()
    assert "/v1/models" in log
    assert FIRST not in log and SECOND not in log and "sk-wrong-key-123" not in log


def test_metrics_are_open_unless_configured(locked, stack, supervisor):
    base, _service = locked
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 200
    _service, closed = stack.start_web("web-metrics-keys", {"API_KEYS": KEYS, "METRICS_REQUIRES_KEY": "true"})
    assert requests.get(f"{closed}/metrics", timeout=10).status_code == 401
    keyed = requests.get(f"{closed}/metrics", headers={"Authorization": f"Bearer {FIRST}"}, timeout=10)
    assert keyed.status_code == 200


def test_health_can_require_a_key(stack, supervisor):
    _service, base = stack.start_web("web-health-keys", {"API_KEYS": KEYS, "HEALTH_REQUIRES_KEY": "true"})
    assert requests.get(f"{base}/health", timeout=10).status_code == 401
    assert requests.get(f"{base}/health", headers={"x-api-key": FIRST}, timeout=10).status_code in (200, 503)
