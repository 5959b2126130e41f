"""API versioning (specification section 9): ``X-API-Version`` answered everywhere, an unknown version refused,
and a route being retired announcing its sunset."""

from __future__ import annotations

import requests

from tests.conftest import CHAT_MODEL


def test_the_version_is_answered_and_an_unknown_one_refused(base_url):
    plain = requests.get(f"{base_url}/v1/models", timeout=10)
    asked = requests.get(f"{base_url}/v1/models", headers={"X-API-Version": "1"}, timeout=10)
    assert plain.headers["X-API-Version"] == asked.headers["X-API-Version"] == "1"
    wrong = requests.get(f"{base_url}/v1/models", headers={"X-API-Version": "2"}, timeout=10)
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "X-API-Version"
    assert "X-API-Deprecated" not in plain.headers


def test_a_retiring_route_announces_its_sunset(stack, supervisor):
    _service, url = stack.start_web("web-retiring", {"DEPRECATED_ROUTES": "/v1/completions=2027-06-30"})
    old = requests.post(
        f"{url}/v1/completions", json={"model": CHAT_MODEL, "prompt": "Hi", "max_tokens": 1}, timeout=60
    )
    assert old.status_code == 200
    assert old.headers["X-API-Deprecated"] == "true" and old.headers["X-API-Sunset"] == "2027-06-30"
    current = requests.get(f"{url}/v1/models", timeout=10)
    assert "X-API-Deprecated" not in current.headers
