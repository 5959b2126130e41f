"""Per-model request statistics in Redis: counts, tokens, errors and a window of recent latencies.

Workers record each finished request; the API reads them for ``/stats``, the
model list and least-recently-used eviction.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import redis

LATENCY_WINDOW = 1000
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds (seconds) of the request-latency and time-to-first-token histograms of ``/metrics``."""
CACHE_TIERS = ("memory", "disk")
"""The prompt cache's tiers, counted apart in ``/metrics``."""
ERRORS_KEY = "mlxf:recent-errors"
ERROR_WINDOW = 1000
"""The most recent request errors of every model kept for ``/internal/diagnostics``."""


def _key(model_id: str) -> str:
    return f"mlxf:stats:{model_id}"


def _latencies_key(model_id: str) -> str:
    return f"mlxf:latencies:{model_id}"


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return 0.0
    rank = max(1, round(fraction * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class ModelStats:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def record(
        self,
        model_id: str,
        latency_ms: float,
        tokens: int,
        error: str | None = None,
        usage: dict[str, Any] | None = None,
        first_token_ms: float | None = None,
        cache_tier: str | None = None,
    ) -> None:
        """One finished request: its latency, tokens (and, from ``usage``, generated and cached prompt tokens, by
        the prompt cache's tier that held them) and time to its first token, as counters and histogram buckets that
        ``/metrics`` reads."""
        now = time.time()
        key = _key(model_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(key, "request_count", 1)
        pipe.hincrby(key, "total_tokens_processed", tokens)
        pipe.hset(key, "last_used", now)
        if error is None:
            pipe.lpush(_latencies_key(model_id), round(latency_ms, 3))
            pipe.ltrim(_latencies_key(model_id), 0, LATENCY_WINDOW - 1)
            _observe(pipe, key, "latency", latency_ms / 1000)
            if first_token_ms is not None:
                _observe(pipe, key, "ttft", first_token_ms / 1000)
            usage = usage or {}
            pipe.hincrby(key, "completion_tokens", int(usage.get("completion_tokens") or 0))
            cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
            if cached:
                pipe.hincrby(key, "prompt_cache_hits", 1)
                pipe.hincrby(key, "cached_tokens", cached)
                if cache_tier in CACHE_TIERS:
                    pipe.hincrby(key, f"prompt_cache_hits_{cache_tier}", 1)
                    pipe.hincrby(key, f"cached_tokens_{cache_tier}", cached)
        else:
            pipe.hincrby(_key(model_id), "error_count", 1)
            pipe.hset(_key(model_id), mapping={"last_error": now, "last_error_message": error[:500]})
            pipe.lpush(ERRORS_KEY, json.dumps({"at": now, "error": error[:500], "model": model_id}))
            pipe.ltrim(ERRORS_KEY, 0, ERROR_WINDOW - 1)
        pipe.execute()

    def counters(self, model_id: str) -> dict[str, float]:
        """Every counter and histogram field of the model (``latency_le_<bound>``, ``latency_sum``, ...)."""
        return {k.decode(): float(v) for k, v in self.client.hgetall(_key(model_id)).items() if _numeric(v)}

    def recent_errors(self, since: float) -> list[dict[str, Any]]:
        """Errors recorded after the epoch time ``since``, newest first (at most the last ``ERROR_WINDOW``)."""
        found = []
        for raw in self.client.lrange(ERRORS_KEY, 0, -1):
            entry = json.loads(raw)
            if entry["at"] < since:
                break
            found.append({"timestamp": _iso(str(entry["at"])), "error": entry["error"], "model": entry["model"]})
        return found

    def last_used(self, model_id: str) -> float | None:
        value = self.client.hget(_key(model_id), "last_used")
        return float(value) if value is not None else None

    def summary(self, model_id: str) -> dict[str, Any]:
        fields = {k.decode(): v.decode() for k, v in self.client.hgetall(_key(model_id)).items()}
        latencies = sorted(float(v) for v in self.client.lrange(_latencies_key(model_id), 0, -1))
        return {
            "request_count": int(fields.get("request_count", 0)),
            "total_tokens_processed": int(fields.get("total_tokens_processed", 0)),
            "avg_latency_ms": round(sum(latencies) / len(latencies), 2) if latencies else 0.0,
            "p50_latency_ms": percentile(latencies, 0.50),
            "p95_latency_ms": percentile(latencies, 0.95),
            "p99_latency_ms": percentile(latencies, 0.99),
            "error_count": int(fields.get("error_count", 0)),
            "last_error": _iso(fields.get("last_error")),
            "last_error_message": fields.get("last_error_message"),
            "last_used": _iso(fields.get("last_used")),
        }

    def clear(self, model_id: str) -> None:
        self.client.delete(_key(model_id), _latencies_key(model_id))


def _observe(pipe: Any, key: str, name: str, seconds: float) -> None:
    """Adds ``seconds`` to the histogram ``name`` (cumulative buckets, as Prometheus counts them)."""
    for bound in LATENCY_BUCKETS:
        if seconds <= bound:
            pipe.hincrby(key, f"{name}_le_{bound}", 1)
    pipe.hincrby(key, f"{name}_count", 1)
    pipe.hincrbyfloat(key, f"{name}_sum", seconds)


def _numeric(value: bytes) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _iso(timestamp: str | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat().replace("+00:00", "Z")
