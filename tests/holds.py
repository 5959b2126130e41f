"""The test session's worker plug-in (``WORKER_PLUGINS=tests.holds``): holds a request's generation between two
tokens while the Redis key ``hold_key(request_id)`` exists, so a test keeps a generation running for as long as
it needs instead of betting on its length. Production workers load no plug-in."""

from __future__ import annotations

import time
from typing import Any

POLL_SECONDS = 0.05


def hold_key(request_id: str) -> str:
    """While this key exists, the request's generation waits between tokens."""
    return f"mlxf:hold:{request_id}"


def held_key(request_id: str) -> str:
    """Set once the request has generated a token and is waiting on its hold."""
    return f"mlxf:held:{request_id}"


def install(runtime: Any) -> None:
    """Adds the hold to the worker's engine (``runtime``: ``tasks.serving.Runtime``)."""
    client = runtime.redis

    def hold(request_id: str, cancelled: Any) -> None:
        marked = False
        while client.exists(hold_key(request_id)) and not cancelled():
            if not marked:
                client.set(held_key(request_id), "1", ex=600)
                marked = True
            time.sleep(POLL_SECONDS)

    runtime.engine.checkpoint_hooks.append(hold)
