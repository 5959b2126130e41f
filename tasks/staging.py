"""Uploaded files on their way from the web to the worker that reads them: Redis keys that expire.

Files travel by Redis, not by a shared disk, so the worker that ingests them
may run on another machine.
"""

from __future__ import annotations

import uuid

import redis


def _key(token: str) -> str:
    return f"mlxf:upload:{token}"


def stage(client: redis.Redis, data: bytes, ttl_seconds: float) -> str:
    token = uuid.uuid4().hex
    client.set(_key(token), data, px=int(ttl_seconds * 1000))
    return token


def read(client: redis.Redis, token: str) -> bytes | None:
    """The staged bytes; None when they expired (or were discarded)."""
    return client.get(_key(token))


def discard(client: redis.Redis, tokens: list[str]) -> None:
    if tokens:
        client.delete(*map(_key, tokens))
