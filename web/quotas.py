"""Usage and quotas per key, counted in Redis so that every web process shares them: requests and tokens of each
key's answers, its open streams, and its optional quotas (tokens per day, concurrent streams, queued jobs), past
which a request is 429 ``quota_exceeded`` naming the quota, with ``Retry-After``.

Tokens are counted when an answer is done, so the request that crosses ``tokens_per_day`` is served and the next
ones are refused until 00:00 UTC. A stream holds a slot in a sorted set scored by when the slot lapses, released
when the response is closed (finished, failed or the client gone); a web process killed under a stream leaves a
slot that lapses after ``STREAM_SLOT_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from flask import Flask, Response, current_app, g, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from config import keys
from config.errors import ApiError
from tasks import job_store
from tasks.key_usage import PREFIX, add_tokens, tokens_today, usage_tokens
from web.identity import current_caller

STREAM_SLOT_SECONDS = 900
JOB_SUBMISSIONS = ("jobs.Jobs",)


class QuotaExceeded(ApiError):
    def __init__(self, quota: str, limit: int, retry_after: int, resets: str) -> None:
        super().__init__(
            429,
            f"This key's {quota} quota ({limit}) is used up; {resets} (Retry-After: {retry_after} s)",
            code="quota_exceeded",
            param=quota,
        )
        self.headers = {"Retry-After": str(max(1, retry_after))}


def seconds_to_midnight(moment: datetime) -> int:
    tomorrow = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return int((tomorrow - moment).total_seconds()) + 1


def counted_events(events: Iterator[dict[str, Any]], key_id: str | None, client: redis.Redis) -> Iterator[dict]:
    """A stream's events, the tokens of its ``done`` event added to the key's usage."""
    try:
        for event in events:
            if key_id and event.get("type") == "done":
                add_tokens(client, key_id, usage_tokens((event.get("result") or {}).get("usage")))
            yield event
    finally:
        events.close()


def _streams_key(key_id: str) -> str:
    return f"{PREFIX}:streams:{key_id}"


def open_streams(client: redis.Redis, key_id: str) -> int:
    now = time.time()
    client.zremrangebyscore(_streams_key(key_id), "-inf", now)
    return int(client.zcard(_streams_key(key_id)))


def _wants_stream() -> bool:
    body = request.get_json(silent=True) if request.is_json else None
    return isinstance(body, dict) and body.get("stream") is True


def check_quotas() -> None:
    """Before a request of a key with quotas: refuse it past one, or hold a stream slot."""
    key = g.get("api_key")
    if key is None or not key.quotas or request.method in ("GET", "HEAD"):
        return
    client: redis.Redis = current_app.extensions["redis"]
    now = datetime.now(UTC)
    if g.get("scope") == "inference" and "tokens_per_day" in key.quotas:
        if tokens_today(client, key.key_id) >= key.quotas["tokens_per_day"]:
            wait = seconds_to_midnight(now)
            raise QuotaExceeded("tokens_per_day", key.quotas["tokens_per_day"], wait, "it resets at 00:00 UTC")
    if request.endpoint in JOB_SUBMISSIONS and "queued_jobs" in key.quotas:
        if job_store.queued_count_of(key.key_id) >= key.quotas["queued_jobs"]:
            raise QuotaExceeded("queued_jobs", key.quotas["queued_jobs"], 10, "it frees as the key's jobs finish")
    if g.get("scope") == "inference" and "concurrent_streams" in key.quotas and _wants_stream():
        limit = key.quotas["concurrent_streams"]
        if open_streams(client, key.key_id) >= limit:
            raise QuotaExceeded("concurrent_streams", limit, 5, "it frees when one of the key's streams ends")
        client.zadd(_streams_key(key.key_id), {g.request_id: time.time() + STREAM_SLOT_SECONDS})
        client.expire(_streams_key(key.key_id), STREAM_SLOT_SECONDS)
        g.stream_slot = (_streams_key(key.key_id), g.request_id)


def _counted(response: Response) -> Response:
    """After a request: count it and its tokens for its key; release its stream slot once the response closes."""
    caller = current_caller()
    client: redis.Redis = current_app.extensions["redis"]
    slot = g.get("stream_slot")
    if slot is not None:
        response.call_on_close(lambda: client.zrem(*slot))
    if caller.owner is None or caller.owner == "anonymous":
        return response
    try:
        client.hincrby(f"{PREFIX}:requests_total", caller.owner, 1)
        if response.status_code == 200 and response.mimetype == "application/json" and not response.is_streamed:
            body = response.get_json(silent=True)
            if isinstance(body, dict) and "usage" in body:
                add_tokens(client, caller.owner, usage_tokens(body["usage"]))
    except Exception:  # noqa: BLE001 - usage is never worth failing the answer
        current_app.logger.warning("could not count the usage of key %s", caller.owner, exc_info=True)
    return response


def usage_report(client: redis.Redis) -> list[dict[str, Any]]:
    """Every key's usage and quotas, for ``GET /admin/usage``."""
    requests = client.hgetall(f"{PREFIX}:requests_total")
    tokens = client.hgetall(f"{PREFIX}:tokens_total")
    rows = [keys.KeyRecord(key_id="admin", name="admin", scopes=frozenset({"admin"}), created_at=datetime.now(UTC))]
    rows += keys.all_keys()
    report = []
    for key in rows:
        used = key.key_id.encode()
        if key.key_id == "admin" and used not in requests:
            continue
        report.append(
            {
                "id": key.key_id,
                "name": key.name,
                "requests": int(requests.get(used, 0)),
                "tokens": int(tokens.get(used, 0)),
                "tokens_today": tokens_today(client, key.key_id),
                "open_streams": open_streams(client, key.key_id),
                "queued_jobs": job_store.queued_count_of(key.key_id),
                "quotas": dict(key.quotas),
            }
        )
    return report


class KeyUsageCollector:
    """``mlx_key_requests_total``, ``mlx_key_tokens_total`` and ``mlx_key_open_streams`` by key name."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Any]:
        try:
            names = {"admin": "admin", **keys.names_by_id()}
        except Exception:  # noqa: BLE001 - MongoDB gone: the keys are shown by id
            names = {"admin": "admin"}
        requests = CounterMetricFamily("mlx_key_requests", "API requests per key", labels=["key"])
        tokens = CounterMetricFamily("mlx_key_tokens", "Tokens of the answers per key", labels=["key"])
        streams = GaugeMetricFamily("mlx_key_open_streams", "Streams open per key", labels=["key"])
        for key_id, count in self.client.hgetall(f"{PREFIX}:requests_total").items():
            requests.add_metric([names.get(key_id.decode(), key_id.decode())], int(count))
        for key_id, count in self.client.hgetall(f"{PREFIX}:tokens_total").items():
            tokens.add_metric([names.get(key_id.decode(), key_id.decode())], int(count))
        for key_id, name in names.items():
            opened = open_streams(self.client, key_id)
            if opened:
                streams.add_metric([name], opened)
        yield from (requests, tokens, streams)


def register_quotas(app: Flask) -> None:
    app.before_request(check_quotas)
    app.after_request(_counted)
