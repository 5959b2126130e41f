"""What the Redis broker holds for a queue: the messages waiting (per priority) and those taken but not acknowledged.

Kombu keeps a queue with priorities as one Redis list per priority step
(``queue``, ``queue:1`` ... ``queue:9``) and the messages a worker has taken in
the ``unacked`` hash until it acknowledges them.
"""

from __future__ import annotations

import json
from typing import Any

import redis

PRIORITY_STEPS = range(10)
SEPARATOR = ":"
UNACKED_KEY = "unacked"
UNACKED_INDEX_KEY = "unacked_index"


def queue_keys(queue: str) -> list[str]:
    """The Redis lists of ``queue``, highest priority first."""
    return [queue if step == 0 else f"{queue}{SEPARATOR}{step}" for step in PRIORITY_STEPS]


def waiting_count(client: redis.Redis, queue: str) -> int:
    pipe = client.pipeline(transaction=False)
    for key in queue_keys(queue):
        pipe.llen(key)
    return sum(pipe.execute())


def _task_id(raw: bytes | str) -> str | None:
    try:
        message: Any = json.loads(raw)
    except ValueError:
        return None
    if isinstance(message, list):  # an ``unacked`` entry: [message, exchange, routing_key]
        message = message[0] if message else {}
    return ((message or {}).get("headers") or {}).get("id")


def waiting_task_ids(client: redis.Redis, queue: str) -> set[str]:
    ids: set[str] = set()
    for key in queue_keys(queue):
        ids.update(filter(None, (_task_id(raw) for raw in client.lrange(key, 0, -1))))
    return ids


def unacked(client: redis.Redis) -> dict[str, tuple[str, float]]:
    """Task id -> (delivery tag, time it was handed to a worker) of every message taken but not acknowledged."""
    entries = client.hgetall(UNACKED_KEY)
    if not entries:
        return {}
    tags = list(entries)
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        pipe.zscore(UNACKED_INDEX_KEY, tag)
    delivered = pipe.execute()
    held: dict[str, tuple[str, float]] = {}
    for tag, at in zip(tags, delivered, strict=True):
        task_id = _task_id(entries[tag])
        if task_id:
            held[task_id] = (tag.decode() if isinstance(tag, bytes) else tag, float(at or 0.0))
    return held


def drop_unacked(client: redis.Redis, tag: str) -> None:
    """Forgets a message taken by a worker that died: it is sent again instead of restored an hour later."""
    pipe = client.pipeline(transaction=True)
    pipe.hdel(UNACKED_KEY, tag)
    pipe.zrem(UNACKED_INDEX_KEY, tag)
    pipe.execute()


def remove_waiting(client: redis.Redis, queue: str, task_id: str) -> bool:
    """Takes the waiting message of ``task_id`` out of ``queue``; False when it is not waiting there."""
    removed = 0
    for key in queue_keys(queue):
        for raw in client.lrange(key, 0, -1):
            if _task_id(raw) == task_id:
                removed += client.lrem(key, 1, raw)
    return removed > 0
