"""The test session's worker plug-in (``WORKER_PLUGINS=tests.holds``): holds a request's generation between two
tokens while the Redis key ``hold_key(request_id)`` exists, so a test keeps a generation running for as long as
it needs instead of betting on its length. Production workers load no plug-in."""

from __future__ import annotations

import time
import uuid
from typing import Any

POLL_SECONDS = 0.05


PREFIX = "hold-"
"""Only requests whose id starts with this are looked up: the others never wait on Redis, as in production."""


def holdable(name: str) -> str:
    """A new request id that ``hold_key`` can hold."""
    return f"{PREFIX}{name}-{uuid.uuid4().hex[:8]}"


def hold_key(request_id: str) -> str:
    """While this key exists, the request's generation waits between tokens."""
    if not request_id.startswith(PREFIX):
        raise ValueError(f"{request_id!r} cannot be held: make its id with holdable()")
    return f"mlxf:hold:{request_id}"


def held_key(request_id: str) -> str:
    """Set once the request's client has been shown output (a streamed one: a first piece of text, not only a
    token that decodes to nothing yet) and it is waiting on its hold; deleted once it goes on."""
    return f"mlxf:held:{request_id}"


def install(runtime: Any) -> None:
    """Adds the hold to the worker's engine (``runtime``: ``tasks.serving.Runtime``). A holdable request is looked
    up in Redis until its hold is found absent, never after: a released request runs on as production's would,
    even while Redis is paused (``tests/test_stack_survives.py``)."""
    client = runtime.redis
    released: set[str] = set()

    def hold(request_id: str, cancelled: Any, shown: bool) -> None:
        if not request_id.startswith(PREFIX) or request_id in released or not shown:
            return
        marked = False
        while client.exists(hold_key(request_id)) and not cancelled():
            if not marked:
                client.set(held_key(request_id), "1", ex=600)
                marked = True
            time.sleep(POLL_SECONDS)
        released.add(request_id)
        if marked:
            client.delete(held_key(request_id))

    runtime.engine.checkpoint_hooks.append(hold)
