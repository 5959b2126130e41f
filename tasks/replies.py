"""The Redis channel of one interactive request: worker events (started, deltas, done, error) and a cancel flag.

A Redis Stream keyed by the task id carries the events in order, bounded in
length and expiring, so a reader that joins late still sees every event. In a
model worker the channel goes through the worker's ``RedisRelay``: events are
written by its writer thread (with explicit entry ids, so a write repeated after
a Redis error is refused, never doubled) and the cancel flag is read by its
poller, so the engine thread never waits on Redis.
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import redis
from redis.client import Pipeline

from tasks.redis_relay import RedisRelay

_EVENT_FIELD = "event"


class ReplyChannel:
    """Events from the worker running task ``task_id`` to the web view that waits for it."""

    def __init__(
        self,
        client: redis.Redis,
        task_id: str,
        maxlen: int = 10000,
        ttl_seconds: int = 600,
        relay: RedisRelay | None = None,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.stream_key = f"mlxf:reply:{task_id}"
        self.cancel_key = f"mlxf:cancel:{task_id}"
        self.maxlen = maxlen
        self.ttl_seconds = ttl_seconds
        self.relay = relay
        self._epoch_ms = int(time.time() * 1000)
        self._sequence = itertools.count(1)
        self._watching = False

    def publish(self, event: dict[str, Any], wait_seconds: float | None = None) -> None:
        """Appends ``event``; through a relay, queued (``wait_seconds``: wait that long for Redis to have it)."""
        if self.relay is None:
            pipe = self.client.pipeline(transaction=False)
            self._append(pipe, {_EVENT_FIELD: json.dumps(event)}, "*")
            pipe.execute()
            return
        fields, entry_id = {_EVENT_FIELD: json.dumps(event)}, f"{self._epoch_ms}-{next(self._sequence)}"
        self.relay.write(lambda pipe: self._append(pipe, fields, entry_id), wait_seconds)

    def _append(self, pipe: Pipeline, fields: dict[str, str], entry_id: str) -> None:
        pipe.xadd(self.stream_key, fields, id=entry_id, maxlen=self.maxlen, approximate=True)
        pipe.expire(self.stream_key, self.ttl_seconds)

    def __enter__(self) -> ReplyChannel:
        """Through a relay, the cancel flag is watched while the channel is open."""
        if self.relay is not None:
            self.relay.watch(self.cancel_key)
            self._watching = True
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._watching:
            self._watching = False
            self.relay.unwatch(self.cancel_key)

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
        """Whether the request was cancelled; inside ``with`` through a relay, as of the relay's last poll."""
        if self._watching:
            return self.relay.is_set(self.cancel_key)
        return bool(self.client.exists(self.cancel_key))

    def discard(self) -> None:
        self.client.delete(self.stream_key)
