"""The one way every process connects to Redis: with socket timeouts, so a stalled server fails a call."""

from __future__ import annotations

import redis

from config.settings import Settings

SPARE_CONNECTIONS = 64
"""Connections beyond one per web thread: heartbeats, the Celery side, views that read while a stream waits."""


def connect_redis(settings: Settings) -> redis.Redis:
    """A client on ``REDIS_URL``; its socket timeout is longer than any blocking read the platform makes.

    Its pool has a connection for every web thread (each open stream blocks on one while it waits) and a few
    more; past that a caller waits for a free connection instead of failing (redis-py's default is 100)."""
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.web_threads + SPARE_CONNECTIONS,
        timeout=settings.redis_socket_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_socket_timeout_seconds,
        health_check_interval=30,
    )
    return redis.Redis(connection_pool=pool)
