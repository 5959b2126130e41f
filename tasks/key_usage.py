"""Tokens each API key's answers used, counted in Redis by day (for its ``tokens_per_day`` quota) and in all (for
``/admin/usage`` and ``/metrics``): the web counts interactive answers, the workers count jobs and batch lines."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis

PREFIX = "mlxf:usage"


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def usage_tokens(usage: Any) -> int:
    """Tokens of an answer's ``usage``, in the OpenAI (``total_tokens``) or Anthropic (input + output) shape."""
    if not isinstance(usage, dict):
        return 0
    if isinstance(usage.get("total_tokens"), int):
        return usage["total_tokens"]
    parts = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")
    return sum(usage[name] for name in parts if isinstance(usage.get(name), int))


def add_tokens(client: redis.Redis, key_id: str | None, tokens: int) -> None:
    """Counts ``tokens`` for the key ``key_id`` (nothing for an answer without a stored key)."""
    if tokens <= 0 or not key_id or key_id in ("admin", "anonymous"):
        return
    today = f"{PREFIX}:tokens:{key_id}:{_day(datetime.now(UTC))}"
    pipe = client.pipeline()
    pipe.incrby(today, tokens)
    pipe.expire(today, 2 * 86400)
    pipe.hincrby(f"{PREFIX}:tokens_total", key_id, tokens)
    pipe.execute()


def tokens_today(client: redis.Redis, key_id: str) -> int:
    return int(client.get(f"{PREFIX}:tokens:{key_id}:{_day(datetime.now(UTC))}") or 0)
