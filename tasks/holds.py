"""Tests only (``ENGINE_TEST_HOLDS``): the Redis keys that hold a request's generation between two tokens."""

from __future__ import annotations


def hold_key(request_id: str) -> str:
    """Tests only (``ENGINE_TEST_HOLDS``): while this key exists, the request's generation waits between tokens."""
    return f"mlxf:hold:{request_id}"


def held_key(request_id: str) -> str:
    """Set once the request has generated a token and is waiting on its hold."""
    return f"mlxf:held:{request_id}"
