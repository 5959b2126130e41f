"""LoRA adapters chosen per request: many adapters, and rows with none, in one continuous batch.

An adapter is mlx-lm's format (``adapters.safetensors`` + ``adapter_config.json``, as ``mlx_lm.lora`` writes it).
It is never fused into the base weights: each adapted linear layer becomes a ``MultiLoRALinear`` that keeps the
base layer and one (A, B, scale) slot per loaded adapter (slot 0 is the base model: zeros), and adds to each row of
the batch the delta of that row's slot, ``scale * (x @ A[slot]) @ B[slot]``, as mlx-lm's ``LoRALinear`` adds its one.

Which row runs which slot travels with the row's KV cache: an ``AdapterTag`` is the last entry of every row's
cache list in the generator, so mlx-lm's merges, filters and splits of the batch keep it in step with the rows.
``RoutedModel`` reads it at each forward pass; ``AdapterBatchGenerator`` adds it when a row joins and takes it off
every cache that leaves the generator (the prompt cache never sees it).
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import BatchGenerator
from mlx_lm.models.cache import make_prompt_cache

from config.errors import ApiError

WEIGHTS_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
BASE_SLOT = 0


@dataclass
class AdapterWeights:
    """One adapter as read from its folder: per adapted layer (its module path) the A and B matrices."""

    scale: float
    rank: int
    layers: dict[str, tuple[mx.array, mx.array]]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.layers.values())


def _invalid(message: str) -> ApiError:
    return ApiError(400, message, code="invalid_adapter", param="adapter_path")


def read_adapter(folder: Path) -> AdapterWeights:
    """The adapter in ``folder``; a 400 naming ``adapter_path`` for a folder that is not a LoRA adapter."""
    config_file, weights_file = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not (config_file.is_file() and weights_file.is_file()):
        raise _invalid(f"{folder} is not an mlx-lm adapter folder (it needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    try:
        config = json.loads(config_file.read_text())
        weights = mx.load(str(weights_file))
    except (OSError, ValueError, RuntimeError) as exc:
        raise _invalid(f"the adapter in {folder} cannot be read: {exc}") from None
    kind = config.get("fine_tune_type", "lora")
    if kind != "lora":
        raise _invalid(f"only LoRA adapters can be chosen per request; this one is fine_tune_type {kind!r}")
    parameters = config.get("lora_parameters") or {}
    if "scale" not in parameters:
        raise _invalid(f"{CONFIG_FILE} has no lora_parameters.scale")
    layers: dict[str, tuple[mx.array, mx.array]] = {}
    for name in weights:
        module, _, leaf = name.rpartition(".")
        if leaf not in ("lora_a", "lora_b"):
            raise _invalid(f"the adapter weight {name!r} is not a LoRA matrix (lora_a or lora_b)")
        if module not in layers:
            a, b = weights.get(f"{module}.lora_a"), weights.get(f"{module}.lora_b")
            if a is None or b is None or a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
                raise _invalid(f"the adapter's matrices for {module!r} are not a LoRA pair of one rank")
            layers[module] = (a, b)
    if not layers:
        raise _invalid(f"{WEIGHTS_FILE} holds no LoRA matrices")
    ranks = {a.shape[1] for a, _b in layers.values()}
    return AdapterWeights(float(parameters["scale"]), max(ranks), layers)


@dataclass
class Routing:
    """The slot of each row of the forward pass in progress (None: every row runs the base model)."""

    slots: mx.array | None = None


@dataclass
class _Stack:
    a: mx.array
    """(slots, input dims, rank): each slot's A, zero-padded to the widest rank (zeros add nothing)."""
    b: mx.array
    """(slots, rank, output dims)."""
    scale: mx.array
    """(slots,)."""
    a_wide: mx.array
    """(input dims, slots x rank): every slot's A side by side, for ``DENSE_SLOTS`` slots or fewer."""
    b_tall: mx.array
    """(slots x rank, output dims): every slot's B stacked."""
    columns: mx.array
    """(slots x rank,): the slot of each column of ``a_wide``."""

    @property
    def count(self) -> int:
        return self.a.shape[0]


DENSE_SLOTS = 8
"""Up to this many slots, a layer computes every slot's ``x @ A`` in one matrix product and keeps each row's own
columns (two dense products instead of a gather and a product per row: faster for a few small adapters); beyond,
it gathers each row's A and B."""


def _dims(linear: nn.Module) -> tuple[int, int]:
    """(input, output) dimensions of a linear layer, quantised or not."""
    output_dims, input_dims = linear.weight.shape
    if isinstance(linear, nn.QuantizedLinear):
        input_dims = input_dims * 32 // linear.bits
    return input_dims, output_dims


class MultiLoRALinear(nn.Module):
    """A base linear layer plus the LoRA delta of each row's adapter."""

    def __init__(self, linear: nn.Module, routing: Routing) -> None:
        super().__init__()
        self.linear = linear
        self._routing = routing
        self._stack: _Stack | None = None
        self._slots: dict[int, tuple[mx.array, mx.array, float]] = {}

    @property
    def dims(self) -> tuple[int, int]:
        return _dims(self.linear)

    def set_slot(self, slot: int, a: mx.array, b: mx.array, scale: float) -> None:
        self._slots[slot] = (a, b, scale)
        self._restack()

    def clear_slot(self, slot: int) -> None:
        if self._slots.pop(slot, None) is not None:
            self._restack()

    @property
    def empty(self) -> bool:
        return not self._slots

    def _restack(self) -> None:
        if not self._slots:
            self._stack = None
            return
        input_dims, output_dims = self.dims
        count = max(self._slots) + 1
        rank = max(a.shape[1] for a, _b, _s in self._slots.values())
        dtype = next(iter(self._slots.values()))[0].dtype
        a_stack = mx.zeros((count, input_dims, rank), dtype=dtype)
        b_stack = mx.zeros((count, rank, output_dims), dtype=dtype)
        scales = [0.0] * count
        for slot, (a, b, scale) in self._slots.items():
            a_stack[slot, :, : a.shape[1]] = a
            b_stack[slot, : b.shape[0], :] = b
            scales[slot] = scale
        a_wide = a_stack.transpose(1, 0, 2).reshape(input_dims, count * rank)
        b_tall = b_stack.reshape(count * rank, output_dims)
        columns = mx.arange(count * rank) // rank
        self._stack = _Stack(a_stack, b_stack, mx.array(scales, dtype=mx.float32), a_wide, b_tall, columns)
        mx.eval(a_stack, b_stack, self._stack.scale, a_wide, b_tall, columns)

    def __call__(self, x: mx.array) -> mx.array:
        y = self.linear(x)
        slots, stack = self._routing.slots, self._stack
        if slots is None or stack is None:
            return y
        slots = mx.where(slots < stack.count, slots, BASE_SLOT)  # a slot this layer does not carry: no delta
        return y + lora_delta(x, stack, slots)


def lora_delta(x: mx.array, stack: _Stack, slots: mx.array) -> mx.array:
    """The delta ``MultiLoRALinear`` adds to rows ``x`` (rows, tokens, in) whose slots are ``slots`` (rows,):
    ``scale * (x @ A) @ B`` of each row's own slot, as mlx-lm's ``LoRALinear`` computes it for one adapter."""
    if stack.count <= DENSE_SLOTS:
        own = (stack.columns[None, :] == slots[:, None]).astype(x.dtype)  # (rows, slots x rank): 1 on its columns
        shape = (own.shape[0],) + (1,) * (x.ndim - 2) + (own.shape[1],)
        z = ((x @ stack.a_wide) * own.reshape(shape)) @ stack.b_tall
    else:
        z = (x @ stack.a[slots]) @ stack.b[slots]
    return (stack.scale[slots].reshape((-1,) + (1,) * (z.ndim - 1)) * z).astype(x.dtype)


class AdapterTag:
    """The last entry of a row's (or a batch's) cache list in the generator: the adapter slot of each row. It
    follows mlx-lm's cache protocol (merge, extend, filter, extract) and holds no K/V."""

    holds_kv = False
    """What speculative decoding's roll-back looks at (``models.speculative.kv_layers``)."""

    def __init__(self, slots: list[int]) -> None:
        self.slots = list(slots)

    @classmethod
    def merge(cls, tags: list[AdapterTag]) -> AdapterTag:
        return cls([slot for tag in tags for slot in tag.slots])

    def extend(self, other: AdapterTag) -> None:
        self.slots.extend(other.slots)

    def filter(self, keep: list[int]) -> None:
        self.slots = [self.slots[i] for i in keep]

    def extract(self, index: int) -> AdapterTag:
        return AdapterTag([self.slots[index]])

    def prepare(self, **_kwargs: Any) -> None:
        pass

    def finalize(self) -> None:
        pass

    @property
    def state(self) -> list[mx.array]:
        return []

    @state.setter
    def state(self, _value: Any) -> None:
        pass

    @property
    def meta_state(self) -> str:
        return ""

    def is_trimmable(self) -> bool:
        return True

    def trim(self, n: int) -> int:
        return n

    def size(self) -> int:
        return 0

    def empty(self) -> bool:
        return not self.slots

    @property
    def nbytes(self) -> int:
        return 0


def untagged(cache: list[Any] | None) -> list[Any] | None:
    """A cache list without its ``AdapterTag``."""
    if cache and isinstance(cache[-1], AdapterTag):
        return cache[:-1]
    return cache


class RoutedModel:
    """The model as the batch generator calls it: each forward pass runs every row with its own adapter."""

    def __init__(self, model: nn.Module, routing: Routing) -> None:
        self.model = model
        self.routing = routing

    def __call__(self, inputs: mx.array, cache: list[Any] | None = None, **kwargs: Any) -> mx.array:
        if not cache or not isinstance(cache[-1], AdapterTag):
            return self.model(inputs, cache=cache, **kwargs)
        *layers, tag = cache
        self.routing.slots = mx.array(tag.slots, dtype=mx.int32) if any(tag.slots) else None
        try:
            return self.model(inputs, cache=layers, **kwargs)
        finally:
            self.routing.slots = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


class AdapterBatchGenerator(BatchGenerator):
    """mlx-lm's ``BatchGenerator`` whose rows each name an adapter slot (``adapters`` of ``insert``)."""

    def __init__(self, model: nn.Module, routing: Routing, **kwargs: Any) -> None:
        super().__init__(RoutedModel(model, routing), **kwargs)
        self._base_model = model

    def insert(
        self,
        prompts: list[list[int]],
        max_tokens: list[int] | None = None,
        caches: list[list[Any]] | None = None,
        *args: Any,
        adapters: list[int] | None = None,
        **kwargs: Any,
    ) -> list[int]:
        slots = adapters or [BASE_SLOT] * len(prompts)
        fresh = lambda: make_prompt_cache(self._base_model, self.max_kv_size)  # noqa: E731
        caches = [
            [*(cache if cache is not None else fresh()), AdapterTag([slot])]
            for cache, slot in zip(caches or [None] * len(prompts), slots, strict=True)
        ]
        return super().insert(prompts, max_tokens, caches, *args, **kwargs)

    def remove(self, uids: Any, return_prompt_caches: bool = False) -> dict[int, Any]:
        found = super().remove(uids, return_prompt_caches=return_prompt_caches)
        return {uid: (untagged(cache), tokens) for uid, (cache, tokens) in found.items()}

    def next(self) -> tuple[list[Any], list[Any]]:
        prompt_responses, responses = super().next()
        for response in responses:
            if response.prompt_cache is not None:
                response.prompt_cache = untagged(response.prompt_cache)
        return prompt_responses, responses


@dataclass(eq=False)
class Adapter:
    """A loaded adapter. Requests hold it from the moment they are prepared; a deleted one serves the requests that
    hold it, and its slot is freed (``freed``) once none does."""

    adapter_id: str
    source: str
    slot: int
    rank: int
    nbytes: int
    layers: list[str]
    serial: int
    deleted: bool = False
    freed: bool = False
    holders: int = 0

    @property
    def cache_key(self) -> str:
        """The prompt cache's key of its rows: its K/V is not the base model's."""
        return f"adapter-{self.serial}"

    def describe(self) -> dict[str, Any]:
        return {
            "adapter_id": self.adapter_id,
            "rank": self.rank,
            "layers": len(self.layers),
            "memory_bytes": self.nbytes,
        }


@dataclass
class AdapterSet:
    """The adapters of one model: which are loaded, in which slots, and the layers that carry them. Loading and
    freeing run on the engine thread; requests are prepared (``hold``) on other threads."""

    model: nn.Module
    routing: Routing = field(default_factory=Routing)
    adapters: dict[str, Adapter] = field(default_factory=dict)
    retired: list[Adapter] = field(default_factory=list)
    """Deleted adapters still held by requests."""
    _serials: Any = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in [*self.adapters.values(), *self.retired])

    def get(self, adapter_id: str) -> Adapter | None:
        return self.adapters.get(adapter_id)

    def load(self, adapter_id: str, folder: Path, source: str) -> Adapter:
        """Reads and installs the adapter (replacing one of the same id whose source differs); a 400 for one that
        does not fit this model: a layer it does not have, or matrices of other dimensions."""
        known = self.adapters.get(adapter_id)
        if known is not None and known.source == source:
            return known
        weights = read_adapter(folder)
        modules = dict(self.model.named_modules())
        for name, (a, b) in weights.layers.items():
            layer = modules.get(name)
            if isinstance(layer, MultiLoRALinear):
                layer = layer.linear
            if not isinstance(layer, (nn.Linear, nn.QuantizedLinear)):
                raise _invalid(
                    f"the adapter changes {name!r}, which is not a linear layer of this model: an adapter for "
                    "another architecture?"
                )
            input_dims, output_dims = _dims(layer)
            if a.shape[0] != input_dims or b.shape[1] != output_dims:
                raise _invalid(
                    f"the adapter's matrices for {name!r} are {tuple(a.shape)} and {tuple(b.shape)}; this model's "
                    f"layer takes {input_dims} and gives {output_dims} (rank x must fit {input_dims}x{output_dims})"
                )
        if known is not None:
            self.delete(adapter_id)
        self._free_unheld()
        slot = self._free_slot()
        for name, (a, b) in weights.layers.items():
            self._multi(name).set_slot(slot, a, b, weights.scale)
        adapter = Adapter(
            adapter_id, source, slot, weights.rank, weights.nbytes, sorted(weights.layers), next(self._serials)
        )
        with self._lock:
            self.adapters[adapter_id] = adapter
        return adapter

    def delete(self, adapter_id: str) -> Adapter | None:
        """New requests no longer find it; its weights go once no request holds it."""
        with self._lock:
            adapter = self.adapters.pop(adapter_id, None)
            if adapter is None:
                return None
            adapter.deleted = True
            self.retired.append(adapter)
        self._free_unheld()
        return adapter

    def hold(self, adapter_id: str) -> Adapter:
        """The adapter a request names, held until ``release``; a 404 naming it when it is not loaded."""
        with self._lock:
            adapter = self.adapters.get(adapter_id)
            if adapter is None:
                raise ApiError(404, f"Adapter '{adapter_id}' is not loaded", code="adapter_not_found", param="model")
            adapter.holders += 1
            return adapter

    def release(self, adapter: Adapter) -> None:
        with self._lock:
            adapter.holders = max(0, adapter.holders - 1)

    def _free_unheld(self) -> None:
        with self._lock:
            done = [a for a in self.retired if a.holders == 0]
            self.retired = [a for a in self.retired if a.holders > 0]
        for adapter in done:
            self._clear(adapter)

    def free_released(self) -> None:
        """Frees the slots of deleted adapters that no request holds any longer (engine thread)."""
        if self.retired:
            self._free_unheld()

    def _clear(self, adapter: Adapter) -> None:
        modules = dict(self.model.named_modules())
        for name in adapter.layers:
            layer = modules.get(name)
            if isinstance(layer, MultiLoRALinear):
                layer.clear_slot(adapter.slot)
        adapter.freed = True

    def _free_slot(self) -> int:
        taken = {a.slot for a in [*self.adapters.values(), *self.retired]}
        return next(slot for slot in itertools.count(BASE_SLOT + 1) if slot not in taken)

    def _multi(self, name: str) -> MultiLoRALinear:
        modules = dict(self.model.named_modules())
        layer = modules[name]
        if isinstance(layer, MultiLoRALinear):
            return layer
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name] if parent_name else self.model
        multi = MultiLoRALinear(layer, self.routing)
        setattr(parent, child, multi)
        return multi
