"""The per-row LoRA layer against mlx-lm's own LoRA layer (one adapter, and fused into the weights), on random
small tensors: rows of one batch with different adapters, and rows with none."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.tuner.lora import LoRALinear

from models import adapters
from models.adapters import AdapterTag, MultiLoRALinear, Routing

IN, OUT = 24, 40


def _lora(base: nn.Linear, rank: int, scale: float, seed: int) -> LoRALinear:
    layer = LoRALinear.from_base(base, r=rank, scale=scale)
    key_a, key_b = mx.random.split(mx.random.key(seed))
    layer.lora_a = mx.random.normal((IN, rank), key=key_a) * 0.1
    layer.lora_b = mx.random.normal((rank, OUT), key=key_b) * 0.1
    return layer


@pytest.mark.parametrize("dense_slots", [adapters.DENSE_SLOTS, 0], ids=["one-product", "gathered"])
def test_each_row_gets_its_own_adapter_and_base_rows_stay_base(monkeypatch, dense_slots):
    """The same rows through both code paths of the per-row delta: ``DENSE_SLOTS`` is set to choose the path (up
    to that many slots, one product; beyond, each row's A and B gathered); nothing is stood in for."""
    monkeypatch.setattr(adapters, "DENSE_SLOTS", dense_slots)
    mx.random.seed(3)
    base = nn.Linear(IN, OUT, bias=True)
    first, second = _lora(base, 4, 2.0, 1), _lora(base, 8, 0.5, 2)  # two ranks: the stack pads the smaller one
    routing = Routing()
    multi = MultiLoRALinear(base, routing)
    multi.set_slot(1, first.lora_a, first.lora_b, first.scale)
    multi.set_slot(3, second.lora_a, second.lora_b, second.scale)
    x = mx.random.normal((5, 7, IN))
    slots = [0, 1, 3, 1, 2]  # slot 2 is no adapter this layer carries: that row is the base model's
    routing.slots = mx.array(slots)
    rows, plain = multi(x), base(x)
    expected = [base, first, second, first, base]
    for row, layer in enumerate(expected):
        want = layer(x[row : row + 1])[0]
        if layer is base:  # the same product as the base layer's on the whole batch, to the bit
            assert mx.array_equal(rows[row], plain[row]), f"base row {row} changed"
        else:
            np.testing.assert_allclose(np.array(rows[row]), np.array(want), rtol=1e-5, atol=1e-5)
            fused = layer.fuse()(x[row : row + 1])[0]  # the weights with the delta folded in: the same map
            np.testing.assert_allclose(np.array(rows[row]), np.array(fused), rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.array(rows[1]), np.array(plain[1]), atol=1e-3)
    routing.slots = None
    assert mx.array_equal(multi(x), base(x)), "without routing every row is the base layer"


def test_a_freed_slot_adds_nothing():
    base = nn.Linear(IN, OUT, bias=False)
    lora = _lora(base, 4, 1.0, 5)
    routing = Routing(mx.array([1, 1]))
    multi = MultiLoRALinear(base, routing)
    multi.set_slot(1, lora.lora_a, lora.lora_b, lora.scale)
    x = mx.random.normal((2, 3, IN))
    assert not mx.array_equal(multi(x), base(x))
    multi.clear_slot(1)
    assert multi.empty and mx.array_equal(multi(x), base(x))


def test_the_tag_follows_the_rows_through_merge_filter_extend_and_extract():
    batch = AdapterTag.merge([AdapterTag([0]), AdapterTag([2]), AdapterTag([1])])
    batch.filter([0, 2])
    batch.extend(AdapterTag.merge([AdapterTag([3])]))
    assert batch.slots == [0, 1, 3]
    assert batch.extract(1).slots == [1]
