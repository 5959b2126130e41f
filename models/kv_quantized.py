"""A quantised KV cache for the continuous batch: ``kv_bits`` 4 or 8, chosen per model at its load.

mlx-lm 0.32 quantises one sequence's cache (``QuantizedKVCache``), but its batch cache (``BatchKVCache``) has no
quantised twin, so its ``BatchGenerator`` cannot batch quantised rows. ``BatchQuantizedKVCache`` is that twin: the
same left-padded layout and the same operations the generator uses (merge, extend, filter, extract, trim, the
causal mask), with keys and values each held as mlx's (packed, scales, biases) triple from ``mx.quantize``.
Every token is stored quantised as it is written, from the first. A decoding step reads them through mlx-lm's own
quantised attention (``models.base`` takes that path for a cache with ``bits``); a prefill step attends to its own
chunk at full precision, after the history dequantised, with the fast attention (``BatchQuantizedKVCache.bits``).

A row taken out of the batch is a ``QuantizedRows`` (mlx-lm's ``QuantizedKVCache`` that can merge back into a
batch), so the prompt cache keeps rows quantised too; ``portable`` and ``batchable`` turn them into mlx-lm's own
class and back, for the disk tier's files (``load_prompt_cache`` knows mlx-lm's classes only).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx.utils import tree_map, tree_reduce
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import KVCache, QuantizedKVCache, _BaseCache, dynamic_roll, make_prompt_cache

from config.model_types import KV_BITS

GROUP_SIZE = 64
"""Elements that share one scale and bias (mlx-lm's default for a quantised KV cache)."""

Triple = tuple[mx.array, mx.array, mx.array]
"""What ``mx.quantize`` gives: the packed integers, the scales and the biases."""


class QuantizedRows(QuantizedKVCache):
    """One sequence's quantised cache that can join a batch."""

    def size(self) -> int:
        return self.offset

    @classmethod
    def merge(cls, caches: list[Any]) -> BatchQuantizedKVCache:
        return BatchQuantizedKVCache.merge(caches)


class BatchQuantizedKVCache(_BaseCache):
    """``BatchKVCache`` with quantised keys and values: rows left-padded to a common length, ``left_padding`` and
    ``offset`` per row, ``_idx`` the filled length of the buffers (allocated ``step`` tokens at a time)."""

    step = 256

    def __init__(self, left_padding: list[int], group_size: int = GROUP_SIZE, bits: int = 8) -> None:
        self.keys: Triple | None = None
        self.values: Triple | None = None
        self.left_padding = mx.array(left_padding)
        self.offset = mx.array([-pad for pad in left_padding])
        self._idx = 0
        self._right_padding: mx.array | None = None
        self.group_size = group_size
        self._bits = bits
        self._prefilling = False

    def _zeros(self, rows: int, heads: int, length: int, dim: int, dtype: mx.Dtype) -> Triple:
        per_word = 32 // self._bits
        groups = dim // self.group_size
        return (
            mx.zeros((rows, heads, length, dim // per_word), dtype=mx.uint32),
            mx.zeros((rows, heads, length, groups), dtype=dtype),
            mx.zeros((rows, heads, length, groups), dtype=dtype),
        )

    @property
    def bits(self) -> int:
        """The bits of the stored K/V. mlx-lm's attention reads a cache with ``bits`` through its quantised path, as
        a decoding step (one token a row) does; a prefill step (several) has none, and takes the fast attention
        over the chunk's own K/V at full precision after the history dequantised (``update_and_fetch``). On a CPU
        the quantised path took 4.5x as long as full precision for a 512-token chunk; this one as long."""
        if self._prefilling:
            raise AttributeError("bits: a prefill step reads the K/V at full precision")
        return self._bits

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[Triple, Triple] | tuple[mx.array, mx.array]:
        prev = self._idx
        rows, heads, steps, key_dim = keys.shape
        if self.keys is None or prev + steps > self.keys[0].shape[2]:
            length = (self.step + steps - 1) // self.step * self.step
            new_keys = self._zeros(rows, heads, length, key_dim, keys.dtype)
            new_values = self._zeros(rows, heads, length, values.shape[3], values.dtype)
            if self.keys is None:
                self.keys, self.values = new_keys, new_values
            else:
                self.keys, self.values = tree_map(
                    lambda old, new: mx.concatenate([old, new], axis=2),
                    _slice_length(self.keys, self.values, 0, prev),
                    (new_keys, new_values),
                )
        self.offset = self.offset + steps
        self._idx += steps
        for stored, written in ((self.keys, keys), (self.values, values)):
            quantized = mx.quantize(written, group_size=self.group_size, bits=self._bits)
            for buffer, part in zip(stored, quantized, strict=True):
                buffer[..., prev : self._idx, :] = part
        self._prefilling = steps > 1
        if not self._prefilling:
            return self.keys_and_values()
        if prev == 0:
            return keys, values
        history = _slice_length(self.keys, self.values, 0, prev)
        return tuple(
            mx.concatenate([mx.dequantize(*old, group_size=self.group_size, bits=self._bits), new], axis=2)
            for old, new in zip(history, (keys, values), strict=True)
        )

    def keys_and_values(self) -> tuple[Triple, Triple]:
        return _slice_length(self.keys, self.values, 0, self._idx)

    def prepare(self, *, left_padding: list[int] | None = None, lengths: Any = None, right_padding: Any = None) -> None:
        if left_padding is not None:
            if self.keys is not None:
                raise ValueError("Left padding can only be added to an empty BatchQuantizedKVCache")
            padding = mx.array(left_padding)
            self.left_padding = self.left_padding + padding
            self.offset = self.offset - padding
        if right_padding is not None and max(right_padding) > 0:
            self._right_padding = mx.array(right_padding)

    def finalize(self) -> None:
        """Rows prefilled with right padding (prompts of several lengths in one step) move it to the left."""
        if self._right_padding is None:
            return
        shift = self._right_padding[:, None]
        self.keys, self.values = tree_map(lambda x: dynamic_roll(x, shift, axis=2), (self.keys, self.values))
        self.offset = self.offset - self._right_padding
        self.left_padding = self.left_padding + self._right_padding
        self._right_padding = None

    @property
    def state(self) -> tuple[Any, ...]:
        return self.keys, self.values, self.offset, self.left_padding, self._idx

    @state.setter
    def state(self, value: tuple[Any, ...]) -> None:
        self.keys, self.values, self.offset, self.left_padding, self._idx = value

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        n = min(self._idx, n)
        self._idx -= n
        self.offset = self.offset - n
        return n

    def size(self) -> int:
        return self._idx

    def empty(self) -> bool:
        return self.keys is None

    @property
    def nbytes(self) -> int:
        if self.keys is None:
            return 0
        return tree_reduce(lambda total, x: total + x.nbytes, (self.keys, self.values), 0)

    def make_mask(self, N: int, return_array: bool = False, **kwargs: Any) -> mx.array:  # noqa: N803 - mlx-lm's name
        return create_causal_mask(N, offset=self._idx, left_padding=self.left_padding, **kwargs)

    def filter(self, batch_indices: Any) -> None:
        """Keeps the given rows, then drops the columns that are padding in every row left."""
        if self.keys is not None:
            self.keys, self.values = tree_map(lambda x: x[batch_indices], (self.keys, self.values))
        self.offset = self.offset[batch_indices]
        self.left_padding = self.left_padding[batch_indices]
        shared = min(self.left_padding.tolist())
        if shared > 0:
            if self.keys is not None:
                self.keys, self.values = tree_map(lambda x: x[..., shared:, :], (self.keys, self.values))
            self._idx -= shared
            self.left_padding = self.left_padding - shared

    def extend(self, other: BatchQuantizedKVCache) -> None:
        """Appends ``other``'s rows, both right-aligned at the longer filled length."""
        if self.keys is None and other.keys is None:
            self.left_padding = mx.concatenate([self.left_padding, other.left_padding])
            self.offset = mx.concatenate([self.offset, other.offset])
            return
        filled = max(self._idx, other._idx)
        template = self if self.keys is not None else other
        length = max(c.keys[0].shape[2] for c in (self, other) if c.keys is not None)

        def aligned(cache: BatchQuantizedKVCache) -> tuple[Triple, Triple, mx.array]:
            if cache.keys is None:
                rows = cache.offset.shape[0]
                keys = tuple(mx.zeros((rows, *x.shape[1:2], 0, x.shape[3]), dtype=x.dtype) for x in template.keys)
                values = tuple(mx.zeros((rows, *x.shape[1:2], 0, x.shape[3]), dtype=x.dtype) for x in template.values)
            else:
                keys, values = cache.keys, cache.values
            left = filled - cache._idx
            right = length - keys[0].shape[2] - left
            if right < 0:
                keys, values = _slice_length(keys, values, 0, keys[0].shape[2] + right)
                right = 0
            if left or right:
                pad = [(0, 0), (0, 0), (left, right), (0, 0)]
                keys, values = tree_map(lambda x: mx.pad(x, pad), (keys, values))
            return keys, values, cache.left_padding + left

        (keys_a, values_a, pad_a), (keys_b, values_b, pad_b) = aligned(self), aligned(other)
        self.keys, self.values = tree_map(lambda a, b: mx.concatenate([a, b]), (keys_a, values_a), (keys_b, values_b))
        self.offset = mx.concatenate([self.offset, other.offset])
        self.left_padding = mx.concatenate([pad_a, pad_b])
        self._idx = filled

    def extract(self, idx: int) -> QuantizedRows:
        """Row ``idx`` without its padding, as a cache of its own."""
        padding = self.left_padding.tolist()[idx]
        row = QuantizedRows(self.group_size, self._bits)
        row.keys, row.values = tree_map(
            lambda x: mx.contiguous(x[idx : idx + 1, :, padding : self._idx]), (self.keys, self.values)
        )
        row.offset = self._idx - padding
        return row

    @classmethod
    def merge(cls, caches: list[QuantizedKVCache]) -> BatchQuantizedKVCache:
        """One batch of single-sequence quantised caches, each right-aligned at the longest."""
        lengths = [cache.offset for cache in caches]
        longest = max(lengths)
        first = caches[0]
        merged = cls([longest - length for length in lengths], first.group_size, first.bits)
        if longest == 0:
            return merged
        filled = next(cache for cache in caches if cache.keys is not None)
        rows = len(caches)
        merged.keys, merged.values = tree_map(
            lambda x: mx.zeros((rows, x.shape[1], longest, x.shape[3]), dtype=x.dtype), (filled.keys, filled.values)
        )
        for i, (length, cache) in enumerate(zip(lengths, caches, strict=True)):
            if cache.keys is None:
                continue
            start = longest - length
            for stored, own in zip((*merged.keys, *merged.values), (*cache.keys, *cache.values), strict=True):
                stored[i : i + 1, :, start:longest] = own[..., :length, :]
        merged.offset = merged.offset + longest
        merged._idx = longest
        return merged


def _slice_length(keys: Triple, values: Triple, start: int, end: int) -> tuple[Triple, Triple]:
    return tree_map(lambda x: x[..., start:end, :], (keys, values))


def quantize_kv(model: Any, bits: int, group_size: int = GROUP_SIZE) -> None:
    """Every cache made for ``model`` from now on (``make_prompt_cache``) is quantised to ``bits``; ValueError
    naming ``kv_bits`` for bits other than 4 or 8, or a model whose cache has layers of another kind (a sliding
    window, a recurrent state: mlx-lm has no batched quantised cache for them)."""
    if bits not in KV_BITS:
        raise ValueError(f"kv_bits must be one of {', '.join(map(str, KV_BITS))}, not {bits}")
    layers = make_prompt_cache(model)
    others = sorted({type(layer).__name__ for layer in layers if type(layer) is not KVCache})
    if others:
        raise ValueError(f"kv_bits: this model's cache has {', '.join(others)} layers, which cannot be quantised")
    head_dim = _head_dim(model)
    if head_dim % group_size:
        raise ValueError(f"kv_bits: the model's head size {head_dim} is not a multiple of {group_size}")
    model.make_cache = lambda: [QuantizedRows(group_size, bits) for _ in layers]


def kv_bits_of(model: Any) -> int | None:
    """The bits of the model's KV cache when ``quantize_kv`` set them, else None."""
    return getattr(make_prompt_cache(model)[0], "bits", None)


def bytes_per_value(bits: int | None, float_bytes: int, group_size: int = GROUP_SIZE) -> float:
    """Bytes one key or value element takes in the cache: the float itself, or its packed bits plus its share of
    the group's scale and bias."""
    if bits is None:
        return float(float_bytes)
    return bits / 8 + 2 * float_bytes / group_size


def portable(cache: list[Any]) -> list[Any]:
    """The cache with its quantised rows as mlx-lm's own ``QuantizedKVCache`` (what ``load_prompt_cache`` reads)."""
    return [QuantizedKVCache.from_state(layer.state) if type(layer) is QuantizedRows else layer for layer in cache]


def batchable(cache: list[Any]) -> list[Any]:
    """The cache with mlx-lm's ``QuantizedKVCache`` layers as ``QuantizedRows``, which can join a batch."""
    return [QuantizedRows.from_state(layer.state) if type(layer) is QuantizedKVCache else layer for layer in cache]


def _head_dim(model: Any) -> int:
    args = model.args
    heads = int(getattr(args, "num_attention_heads", 1))
    return int(getattr(args, "head_dim", 0) or args.hidden_size // heads)
