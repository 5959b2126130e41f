"""The Redis channel of one interactive request: worker events (started, deltas, done, error) and a cancel flag.

A Redis Stream keyed by the task id carries the events in order, bounded in
length and expiring, so a reader that joins late still sees every event.
"""

from __future__ import annotations

import json
from typing import Any

import redis

_EVENT_FIELD = "event"


class ReplyChannel:
    """Events from the worker running task ``task_id`` to the web view that waits for it."""

    def __init__(self, client: redis.Redis, task_id: str, maxlen: int = 10000, ttl_seconds: int = 600) -> None:
        self.client = client
        self.task_id = task_id
        self.stream_key = f"mlxf:reply:{task_id}"
        self.cancel_key = f"mlxf:cancel:{task_id}"
        self.maxlen = maxlen
        self.ttl_seconds = ttl_seconds

    def publish(self, event: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.stream_key, {_EVENT_FIELD: json.dumps(event)}, maxlen=self.maxlen, approximate=True)
        pipe.expire(self.stream_key, self.ttl_seconds)
        pipe.execute()

    def read(self, after: str, block_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """Events after the stream id ``after`` ("0" for all), waiting up to ``block_ms`` for the first."""
        answer = self.client.xread({self.stream_key: after}, block=block_ms, count=256)
        events: list[tuple[str, dict[str, Any]]] = []
        for _key, entries in answer or []:
            for entry_id, fields in entries:
                entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                raw = fields.get(_EVENT_FIELD.encode(), fields.get(_EVENT_FIELD))
                events.append((entry, json.loads(raw)))
        return events

    def cancel(self) -> None:
        self.client.set(self.cancel_key, "1", ex=self.ttl_seconds)

    def cancelled(self) -> bool:
        return bool(self.client.exists(self.cancel_key))

    def discard(self) -> None:
        self.client.delete(self.stream_key)
