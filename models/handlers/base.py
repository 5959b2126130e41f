"""The interface every model handler implements; the engine thread is its only caller."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Emit = Callable[[dict[str, Any]], None]
"""Sends an event (e.g. a text delta) to the waiting client."""
PROGRESS: dict[str, Any] = {"type": "progress"}
"""Emitted by a handler during long work that yields no token (a prompt's prefill, a batch of embeddings): the
engine counts it as progress (so a slow engine is not taken for a hung one) and does not pass it on."""
Cancelled = Callable[[], bool]
"""True once the client has gone or cancelled; checked between tokens."""


class ModelHandler(Protocol):
    context_length: int

    def warmup(self) -> None:
        """Runs the model once so the first request does not pay for compilation and allocation."""

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        """Does ``operation`` on ``payload`` and returns its result; raises ``ApiError`` for bad input."""
