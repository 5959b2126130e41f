"""Which model workers are alive: each worker beats into Redis, readers take silence as death.

A sorted set per model holds worker hostnames scored by their last beat; a
key per worker, expiring after the TTL, holds what the worker reports of itself
(model type, warm-up state, active and queued requests, memory).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

_MODELS_KEY = "mlxf:models-with-workers"


def _workers_key(model_id: str) -> str:
    return f"mlxf:workers:{model_id}"


def _processes_key(role: str) -> str:
    return f"mlxf:processes:{role}"


def _worker_key(hostname: str) -> str:
    return f"mlxf:worker:{hostname}"


def probe_queue(hostname: str) -> str:
    """The Celery queue of one worker's health probes (``tasks.probes``); only that worker consumes it."""
    return f"probe.{hostname}"


def _probe_queue_keys(hostname: str) -> list[str]:
    """The Redis keys kombu keeps for the probe queue: its lists (one per priority step) and its binding."""
    queue = probe_queue(hostname)
    return [queue, *(f"{queue}:{step}" for step in range(1, 10)), f"_kombu.binding.{queue}"]


class Liveness:
    def __init__(self, client: redis.Redis, ttl_seconds: float) -> None:
        self.client = client
        self.ttl_seconds = ttl_seconds

    def beat(self, model_id: str, hostname: str, report: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(_MODELS_KEY, model_id)
        pipe.zadd(_workers_key(model_id), {hostname: time.time()})
        pipe.set(
            _worker_key(hostname),
            json.dumps({**report, "model_id": model_id, "hostname": hostname}),
            px=int(self.ttl_seconds * 1000),
        )
        pipe.execute()

    def beat_process(self, role: str, hostname: str, report: dict[str, Any]) -> None:
        """A beat of a worker that serves no model (``role`` "control"): alive, and listed under its role."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(_processes_key(role), {hostname: time.time()})
        pipe.set(
            _worker_key(hostname),
            json.dumps({**report, "role": role, "hostname": hostname}),
            px=int(self.ttl_seconds * 1000),
        )
        pipe.execute()

    def processes(self, role: str) -> list[dict[str, Any]]:
        """Reports of the live workers of ``role`` (see ``beat_process``)."""
        return self._live(_processes_key(role))

    def leave(self, model_id: str, hostname: str) -> None:
        """Removes a worker's entries, and its probe queue (the next worker of the model has its own)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(_workers_key(model_id), hostname)
        pipe.delete(_worker_key(hostname), *_probe_queue_keys(hostname))
        pipe.execute()

    def forget_process(self, model_id: str, pid: int, node: str) -> None:
        """Removes the entries of a worker process of ``node`` known to be dead (e.g. killed), without waiting for
        the TTL."""
        for report in self.workers(model_id):
            if report.get("pid") == pid and report.get("node") == node:
                self.leave(model_id, report["hostname"])

    def is_alive(self, hostname: str) -> bool:
        return bool(self.client.exists(_worker_key(hostname)))

    def workers(self, model_id: str) -> list[dict[str, Any]]:
        """Reports of the live workers of ``model_id``."""
        return self._live(_workers_key(model_id))

    def workers_by_model(self, model_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Reports of the live workers of each of ``model_ids`` (an empty list for one with none), in two round
        trips to Redis however many models: a supervisor's tick reads them all at once."""
        if not model_ids:
            return {}
        since = time.time() - self.ttl_seconds
        pipe = self.client.pipeline(transaction=False)
        for model_id in model_ids:
            pipe.zrangebyscore(_workers_key(model_id), since, "+inf")
        hostnames = {
            model_id: [h.decode() for h in found] for model_id, found in zip(model_ids, pipe.execute(), strict=True)
        }
        everyone = [h for names in hostnames.values() for h in names]
        reports = (
            dict(zip(everyone, self.client.mget([_worker_key(h) for h in everyone]), strict=True)) if everyone else {}
        )
        return {
            model_id: [json.loads(reports[h]) for h in names if reports.get(h) is not None]
            for model_id, names in hostnames.items()
        }

    def _live(self, beats_key: str) -> list[dict[str, Any]]:
        """Reports of the hostnames in the sorted set ``beats_key`` that beat within the TTL and still report."""
        since = time.time() - self.ttl_seconds
        hostnames = self.client.zrangebyscore(beats_key, since, "+inf")
        if not hostnames:
            return []
        reports = self.client.mget([_worker_key(h.decode()) for h in hostnames])
        return [json.loads(r) for r in reports if r is not None]

    def models_of_type(self, model_type: str) -> list[str]:
        """The ids, sorted, of the ``model_type`` models that have a live worker."""
        return sorted(m for m, reports in self.models().items() if reports[0].get("model_type") == model_type)

    def models(self) -> dict[str, list[dict[str, Any]]]:
        """Live workers' reports for every model that has one."""
        model_ids = sorted(m.decode() for m in self.client.smembers(_MODELS_KEY))
        live = self.workers_by_model(model_ids)
        return {model_id: reports for model_id, reports in live.items() if reports}


def user_requests(report: dict[str, Any]) -> int:
    """Requests a worker (by its heartbeat ``report``) runs or holds for callers: its health probe left out."""
    held = report.get("active", 0) + report.get("queued", 0)
    return max(0, held - (1 if report.get("probe_in_flight") else 0))


def last_answered_at(report: dict[str, Any]) -> float | None:
    """When a worker (by its heartbeat ``report``) last answered: its health probe, or a request (which proved it
    as well, so no probe was sent)."""
    times = [t for t in (report.get("probe_answered_at"), report.get("answered_at")) if t is not None]
    return max(times, default=None)


ANSWERING, BUSY, STARTING, UNRESPONSIVE = "answering", "busy", "starting", "unresponsive"
SERVING_VERDICTS = frozenset({ANSWERING, BUSY, STARTING})


def probe_verdict(report: dict[str, Any] | None, now: float, max_age_seconds: float) -> str:
    """Whether a worker, by its heartbeat ``report`` (None: it has stopped beating), serves its model.

    ``answering``: its last health probe, a tiny real call through its own queue, or a request answered within
    ``max_age_seconds``. ``busy``: no recent answer, but its engine is serving other requests and making progress
    (a probe may wait behind a full batch). ``starting``: loaded less than ``max_age_seconds`` ago, its first probe
    not answered yet. ``unresponsive`` otherwise (a stalled engine included): the process may be up, yet nothing
    comes out of it.
    """
    if report is None or report.get("stalled"):
        return UNRESPONSIVE
    answered_at = last_answered_at(report)
    if answered_at is not None and now - answered_at <= max_age_seconds:
        return ANSWERING
    if report.get("active") and not report.get("stalled"):
        return BUSY
    if answered_at is None and now - report.get("started_at", 0.0) <= max_age_seconds:
        return STARTING
    return UNRESPONSIVE
