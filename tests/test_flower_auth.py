"""Flower, the Celery dashboard, is behind HTTP basic auth when the API has keys (user ``mlx``, the first key)."""

from __future__ import annotations

import sys

import requests

from tests.stack import free_port, wait_until
from tests.used_keys import remember

KEY = remember("sk-flower-test-4c1e")


def test_flower_needs_basic_auth_when_keys_are_set(stack):
    port = free_port()
    service = stack.start(
        "flower-keys", [sys.executable, "-m", "tasks.flower_app", "--port", str(port)], {"API_KEYS": f"{KEY},other"}
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: requests.get(url, timeout=2).status_code in (200, 401), 60, "flower", service.process)
    assert requests.get(url, timeout=5).status_code == 401
    assert requests.get(url, auth=("mlx", "wrong"), timeout=5).status_code == 401
    assert requests.get(url, auth=("mlx", KEY), timeout=5).status_code == 200
    command_line = open(f"/proc/{service.process.pid}/cmdline", "rb").read().decode()
    assert "flower" in command_line and KEY not in command_line, "the key travels in the environment only"
