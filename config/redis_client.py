"""The one way every process connects to Redis: with socket timeouts, so a stalled server fails a call."""

from __future__ import annotations

import redis

from config.settings import Settings


def connect_redis(settings: Settings) -> redis.Redis:
    """A client on ``REDIS_URL``; its socket timeout is longer than any blocking read the platform makes."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
    )
