"""The interface every model handler implements; the engine thread is its only caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Emit = Callable[[dict[str, Any]], None]
"""Sends an event (e.g. a text delta) to the waiting client."""
PROGRESS: dict[str, Any] = {"type": "progress"}
"""Emitted by a handler during long work that yields no token (a prompt's prefill, a batch of embeddings): the
engine counts it as progress (so a slow engine is not taken for a hung one) and does not pass it on."""
Cancelled = Callable[[], bool]
"""True once the client has gone or cancelled; checked between tokens."""


@dataclass(frozen=True)
class ServingLimits:
    """How much one worker serves at once: sequences in its batch, KV-cache memory, the prompt cache's size."""

    max_sequences: int = 1
    kv_budget_bytes: int = 4 * 10**9
    prompt_cache_entries: int = 16
    prompt_cache_bytes: int = 10**9
    prefill_step_size: int = 512
    background_rows_beside_interactive: int = 4
    draft_tokens: int = 4
    """The most tokens a language model's row drafts per step (speculative decoding); 0: none."""
    prompt_cache_disk_folder: Path | None = None
    """This model's folder in the disk tier (None: no disk tier); the weights' fingerprint is added below it."""
    prompt_cache_disk_bytes: int = 0
    """What the whole disk tier (the folder above the model's) may hold."""
    prompt_cache_disk_min_tokens: int = 1024
    kv_bits: int | None = None
    """A language model's KV cache quantised to this many bits (``models.kv_quantized``); None: full precision."""


class RequestCancelled(Exception):
    """The request was cancelled while it waited for the engine; it never ran."""


def length_batches(
    lengths: list[int], size: int, what: str, emit: Emit | None = None, cancelled: Cancelled | None = None
) -> Iterator[list[int]]:
    """The indices of the inputs whose ``lengths`` are given, in batches of ``size``, shortest first (the least
    padding); before each batch, progress is emitted, and a cancelled request stops (``RequestCancelled``)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    for start in range(0, len(order), size):
        if cancelled is not None and cancelled():
            raise RequestCancelled(f"cancelled between {what} batches")
        if emit is not None:
            emit(PROGRESS)
        yield order[start : start + size]


class ModelHandler(Protocol):
    context_length: int

    def warmup(self) -> None:
        """Runs the model once so the first request does not pay for compilation and allocation."""

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        """Does ``operation`` on ``payload`` and returns its result; raises ``ApiError`` for bad input.
        ``warmup`` answers ``{"prompt_tokens": n}`` (0 for a model without a text prompt)."""
