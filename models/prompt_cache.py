"""The prompt cache of one model worker: KV caches of recent prompts, least recently used dropped first.

A new request starts from the longest cached prefix of its prompt: in memory (mlx-lm's ``LRUPromptCache``, a token
trie) or, when a longer one is there, on disk (``models.prompt_disk``, which long prompts are also written to and
which outlives the worker). At least one prompt token is always left to compute: re-feeding the last token of an
exact hit into its own cache would corrupt the answer.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import LRUPromptCache, can_trim_prompt_cache, trim_prompt_cache

from models.prompt_disk import DiskHit, DiskPromptCache

log = logging.getLogger(__name__)

MODEL_KEY = "model"
"""The base model's entries; the rows of a LoRA adapter keep theirs under the adapter's own key
(``models.adapters.Adapter.cache_key``), in memory only."""


@dataclass
class CacheHit:
    cache: list[Any] | None
    remaining: list[int]
    """The prompt tokens still to compute (never empty)."""
    cached_tokens: int
    tier: str | None = None
    """Where the cached prefix came from: ``memory``, ``disk``, or None for no hit."""


class PromptCache:
    def __init__(self, max_entries: int, max_bytes: int, disk: DiskPromptCache | None = None) -> None:
        self.enabled = max_entries > 0 and max_bytes > 0
        self.store = LRUPromptCache(max_size=max(1, max_entries), max_bytes=max(1, max_bytes))
        self.disk = disk if disk is not None and disk.enabled else None
        self.hits = 0
        self.lookups = 0
        self._lock = threading.Lock()
        """The trie is read by the threads preparing requests (``known_length``) while the engine changes it."""

    def known_length(self, tokens: list[int]) -> int:
        """How many leading tokens of ``tokens`` a hit in memory would take now (any thread; copies nothing)."""
        if not self.enabled or len(tokens) < 2:
            return 0
        with self._lock:
            # mlx-lm's LRUPromptCache has no public way to ask without deep-copying the cache it finds.
            found = self.store._trie.search(MODEL_KEY, tokens)
        if found.exact is not None:
            return len(tokens) - 1
        known = len(found.shorter) if found.shorter is not None else 0
        if found.longer is not None:
            known = max(known, min(found.common_prefix, len(tokens) - 1))
        return known

    def load_from_disk(self, tokens: list[int]) -> DiskHit | None:
        """The disk tier's cache of the longest prefix of ``tokens``, if longer than what memory holds (any thread:
        the threads preparing requests call it, so that the engine thread never reads the disk)."""
        if self.disk is None:
            return None
        try:
            return self.disk.load(tokens, at_least=self.known_length(tokens))
        except OSError:  # an unreadable folder costs the hit, never the request
            log.warning("the prompt cache's disk tier could not be read", exc_info=True)
            return None

    def fetch(self, tokens: list[int], from_disk: DiskHit | None = None, key: str = MODEL_KEY) -> CacheHit:
        """A copy of the cache of the longest known prefix of ``tokens`` and what is left to compute; ``from_disk``
        (what ``load_from_disk`` found for these tokens) serves when memory knows less."""
        hit = self._fetch_memory(tokens, key)
        if from_disk is not None and from_disk.cached_tokens > hit.cached_tokens:
            hit = CacheHit(from_disk.cache, tokens[from_disk.cached_tokens :], from_disk.cached_tokens, "disk")
        if hit.tier is not None:
            self.hits += 1
        return hit

    def _fetch_memory(self, tokens: list[int], key: str) -> CacheHit:
        if not self.enabled or len(tokens) < 2:
            return CacheHit(None, tokens, 0)
        self.lookups += 1
        with self._lock:
            cache, remaining = self.store.fetch_nearest_cache(key, tokens)
        if cache is None:
            return CacheHit(None, tokens, 0)
        if not remaining:
            if not can_trim_prompt_cache(cache):
                return CacheHit(None, tokens, 0)
            trim_prompt_cache(cache, 1)
            remaining = tokens[-1:]
        return CacheHit(cache, list(remaining), len(tokens) - len(remaining), "memory")

    def keep(
        self, tokens: list[int], cache: list[Any], key: str = MODEL_KEY, disk: bool = True, memory: bool = True
    ) -> None:
        """Remembers the cache of ``tokens`` (a finished request's prompt and answer); a long one is also queued for
        the disk tier unless ``disk`` is false (a prefill cut short, soon taken up again). ``memory`` false: the disk
        tier only (a prompt whose answer is still being written, kept in memory when it ends).

        A row taken out of a batch (``BatchKVCache.extract``) is a lazy slice of the whole batch's K/V buffers:
        kept unevaluated, it would keep those alive, many times what ``nbytes`` counts. Evaluated, it holds only
        its own row (and the disk tier's writer thread only reads evaluated arrays)."""
        disk = self.disk if key == MODEL_KEY and disk else None
        memory = memory and self.enabled
        if not tokens or not cache or not (memory or disk is not None):
            return
        mx.eval([layer.state for layer in cache])
        if memory:
            with self._lock:
                self.store.insert_cache(key, list(tokens), cache)
        if disk is not None:
            self.disk.put(list(tokens), cache)

    def flush(self, timeout: float = 10.0) -> None:
        """Waits (at most ``timeout``) for the disk tier's queued writes."""
        if self.disk is not None:
            self.disk.flush(timeout)

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    def __len__(self) -> int:
        return len(self.store)
