"""The prompt cache of one model worker: KV caches of recent prompts, least recently used dropped first.

A new request starts from the longest cached prefix of its prompt (mlx-lm's ``LRUPromptCache``, a token trie).
At least one prompt token is always left to compute: re-feeding the last token of an exact hit into its own
cache would corrupt the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

MODEL_KEY = "model"
"""One worker serves one model, so every entry shares this key."""


@dataclass
class CacheHit:
    cache: list[Any] | None
    remaining: list[int]
    """The prompt tokens still to compute (never empty)."""
    cached_tokens: int


class PromptCache:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.enabled = max_entries > 0 and max_bytes > 0
        self.store = LRUPromptCache(max_size=max(1, max_entries), max_bytes=max(1, max_bytes))
        self.hits = 0
        self.lookups = 0

    def fetch(self, tokens: list[int]) -> CacheHit:
        """A copy of the cache of the longest known prefix of ``tokens`` and what is left to compute."""
        if not self.enabled or len(tokens) < 2:
            return CacheHit(None, tokens, 0)
        self.lookups += 1
        cache, remaining = self.store.fetch_nearest_cache(MODEL_KEY, tokens)
        if cache is None:
            return CacheHit(None, tokens, 0)
        if not remaining:
            if not can_trim_prompt_cache(cache):
                return CacheHit(None, tokens, 0)
            trim_prompt_cache(cache, 1)
            remaining = tokens[-1:]
        self.hits += 1
        return CacheHit(cache, list(remaining), len(tokens) - len(remaining))

    def keep(self, tokens: list[int], cache: list[Any]) -> None:
        """Remembers the cache of ``tokens`` (a finished request's prompt and answer).

        A row taken out of a batch (``BatchKVCache.extract``) is a lazy slice of the whole batch's K/V buffers:
        kept unevaluated, it would keep those alive, many times what ``nbytes`` counts. Evaluated, it holds only
        its own row."""
        if self.enabled and tokens and cache:
            mx.eval([layer.state for layer in cache])
            self.store.insert_cache(MODEL_KEY, list(tokens), cache)

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    def __len__(self) -> int:
        return len(self.store)
