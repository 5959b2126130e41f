"""Progress of a running job, kept in Redis (MongoDB is never written per token)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline

from tasks.redis_relay import RedisRelay

_TTL_SECONDS = 24 * 3600
_EVERY_SECONDS = 0.5


def _key(job_id: str) -> str:
    return f"mlxf:job-progress:{job_id}"


class JobProgress:
    """Counts a job's generated deltas and records the fraction of ``max_tokens`` done, twice a second at most."""

    def __init__(
        self, client: redis.Redis, job_id: str, max_tokens: int | None, relay: RedisRelay | None = None
    ) -> None:
        """Through ``relay`` (a model worker's), writes are queued: the engine thread that reports never waits."""
        self.client = client
        self.relay = relay
        self.job_id = job_id
        self.max_tokens = max_tokens
        self.deltas = 0
        self.written_at = 0.0

    def on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "progress_fraction":
            self._fraction(event["fraction"], event.get("detail", {}))
            return
        if event.get("type") != "delta" or not self.max_tokens:
            return
        self.deltas += 1
        moment = time.monotonic()
        if moment - self.written_at >= _EVERY_SECONDS:
            self.written_at = moment
            fraction = min(self.deltas / self.max_tokens, 0.99)
            self._write(lambda pipe: pipe.set(_key(self.job_id), fraction, ex=_TTL_SECONDS))

    def _fraction(self, fraction: float, detail: dict[str, Any]) -> None:
        """A handler's own measure of work done (a transcription's share of the audio)."""
        moment = time.monotonic()
        if moment - self.written_at >= _EVERY_SECONDS or fraction >= 1.0:
            self.written_at = moment
            self._write(lambda pipe: _queue_progress(pipe, self.job_id, fraction, detail))

    def _write(self, write: Callable[[Pipeline], None]) -> None:
        if self.relay is not None:
            self.relay.write(write)
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            write(pipe)
            pipe.execute()
        except redis.RedisError:
            pass


def read_progress(client: redis.Redis, job_id: str) -> float:
    raw = client.get(_key(job_id))
    return round(float(raw), 2) if raw else 0.0


def _detail_key(job_id: str) -> str:
    return f"mlxf:job-progress-detail:{job_id}"


def write_progress(client: redis.Redis, job_id: str, fraction: float, detail: dict[str, Any]) -> None:
    """Progress of a job that is not a generation (an ingest: files and chunks done), with what it counts."""
    pipe = client.pipeline(transaction=False)
    _queue_progress(pipe, job_id, fraction, detail)
    pipe.execute()


def _queue_progress(pipe: Pipeline, job_id: str, fraction: float, detail: dict[str, Any]) -> None:
    pipe.set(_key(job_id), min(max(fraction, 0.0), 0.99), ex=_TTL_SECONDS)
    pipe.set(_detail_key(job_id), json.dumps(detail), ex=_TTL_SECONDS)


def read_progress_detail(client: redis.Redis, job_id: str) -> dict[str, Any] | None:
    raw = client.get(_detail_key(job_id))
    return json.loads(raw) if raw else None
