"""Images answered with ``response_format=url``: kept in Redis under an unguessable token until they expire."""

from __future__ import annotations

import base64
import secrets

import redis


def _key(token: str) -> str:
    return f"mlxf:image-file:{token}"


def keep(client: redis.Redis, b64_png: str, ttl_seconds: int) -> str:
    """Stores the PNG; returns its token (the URL's capability: whoever has it can download the image)."""
    token = secrets.token_urlsafe(24)
    client.set(_key(token), base64.b64decode(b64_png), ex=ttl_seconds)
    return token


def read(client: redis.Redis, token: str) -> bytes | None:
    return client.get(_key(token))
