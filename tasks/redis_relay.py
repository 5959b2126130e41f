"""A model worker's per-token Redis traffic, kept off the engine thread.

Events (stream deltas, job progress) leave through a bounded buffer that one
thread writes in pipelines; cancel flags arrive by one read per interval for
every running request. A Redis error or stall never reaches the engine: the
writer retries the same writes, in order, with backoff, and a reader polls on.
A full buffer (Redis gone for long) makes the caller wait, so nothing a stream
carries is dropped or reordered.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

import redis
from redis.client import Pipeline

log = logging.getLogger(__name__)

Write = Callable[[Pipeline], None]
"""Queues its commands on the pipeline it is given; it may be given again after an error, so it must be safe to
repeat (an explicit stream entry id makes a repeated XADD an error Redis answers, not a duplicate)."""

CAPACITY = 100_000
"""Writes buffered while Redis does not answer; then writers wait."""
WRITES_PER_PIPELINE = 512
POLL_SECONDS = 0.05
"""How often the cancel flags of running requests are read (one round trip for all of them)."""
MAX_BACKOFF_SECONDS = 2.0
WARN_EVERY_SECONDS = 10.0


def _stop_writer(_pipe: Pipeline) -> None:
    """Put on the write queue by ``stop``: the writer ends when it takes it."""


class RedisRelay:
    def __init__(self, client: redis.Redis, capacity: int = CAPACITY, poll_seconds: float = POLL_SECONDS) -> None:
        self.client = client
        self.poll_seconds = poll_seconds
        self._writes: queue.Queue[tuple[Write, threading.Event | None]] = queue.Queue(capacity)
        self._watched: Counter[str] = Counter()
        self._set_flags: set[str] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watching = threading.Event()
        """Set while keys are watched: with none, the flag poller sleeps instead of waking every poll."""
        self._threads = [
            threading.Thread(target=self._write_forever, name="redis-writer", daemon=True),
            threading.Thread(target=self._poll_forever, name="redis-flags", daemon=True),
        ]
        self._warned_at = 0.0
        self.failures = 0
        """Pipelines that failed and were tried again (shown in the worker's stats)."""

    def start(self) -> RedisRelay:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, flush_seconds: float = 5.0) -> None:
        """Writes what is buffered (for at most ``flush_seconds``), then stops both threads."""
        deadline = time.monotonic() + flush_seconds
        while self._writes.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stopping.set()
        self._watching.set()
        with contextlib.suppress(queue.Full):  # a full queue keeps the writer busy: it sees ``_stopping`` itself
            self._writes.put_nowait((_stop_writer, None))
        for thread in self._threads:
            thread.join(timeout=1)

    def write(self, write: Write, wait_seconds: float | None = None) -> bool:
        """Queues ``write``; with ``wait_seconds``, returns whether Redis has it within that time (it is written
        later otherwise)."""
        written = threading.Event() if wait_seconds is not None else None
        self._writes.put((write, written))
        return written.wait(wait_seconds) if written is not None else True

    def watch(self, key: str) -> None:
        """``is_set(key)`` follows whether ``key`` exists in Redis from the next poll on."""
        with self._lock:
            self._watched[key] += 1
            self._watching.set()

    def unwatch(self, key: str) -> None:
        with self._lock:
            self._watched[key] -= 1
            if self._watched[key] <= 0:
                del self._watched[key]
                self._set_flags.discard(key)
            if not self._watched:
                self._watching.clear()

    def is_set(self, key: str) -> bool:
        """Whether the watched ``key`` existed at the last poll that answered (once seen, it stays set)."""
        return key in self._set_flags

    def _write_forever(self) -> None:
        batch: list[tuple[Write, threading.Event | None]] = []
        backoff = POLL_SECONDS
        while not self._stopping.is_set():
            if not batch:
                batch.append(self._writes.get())  # at rest it sleeps here; ``stop`` wakes it with ``_stop_writer``
                if batch[-1][0] is _stop_writer:
                    self._writes.task_done()
                    return
                while len(batch) < WRITES_PER_PIPELINE:
                    try:
                        batch.append(self._writes.get_nowait())
                    except queue.Empty:
                        break
            try:
                pipe = self.client.pipeline(transaction=False)
                for write, _written in batch:
                    write(pipe)
                pipe.execute(raise_on_error=False)
            except redis.RedisError as exc:
                self._backoff("write", exc, backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)
                continue
            backoff = POLL_SECONDS
            for _write, written in batch:
                if written is not None:
                    written.set()
                self._writes.task_done()
            batch = []

    def _poll_forever(self) -> None:
        backoff = self.poll_seconds
        while not self._stopping.wait(backoff):
            self._watching.wait()  # nothing watched: no poll (a worker at rest wakes for nothing)
            with self._lock:
                keys = [key for key in self._watched if key not in self._set_flags]
            if not keys:
                backoff = self.poll_seconds
                continue
            try:
                pipe = self.client.pipeline(transaction=False)
                for key in keys:
                    pipe.exists(key)
                found = pipe.execute()
            except redis.RedisError as exc:
                self._backoff("read", exc, 0)
                backoff = min(2 * backoff, MAX_BACKOFF_SECONDS)
                continue
            backoff = self.poll_seconds
            raised = {key for key, exists in zip(keys, found, strict=True) if exists}
            with self._lock:
                self._set_flags.update(raised & self._watched.keys())

    def _backoff(self, what: str, exc: redis.RedisError, seconds: float) -> None:
        self.failures += 1
        moment = time.monotonic()
        if moment - self._warned_at > WARN_EVERY_SECONDS:
            self._warned_at = moment
            log.warning("Redis did not answer a %s (%s: %s); trying again", what, type(exc).__name__, exc)
        if seconds:
            self._stopping.wait(seconds)
