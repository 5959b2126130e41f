"""Memory-budget eviction: least recently used idle models go first; 503 when they cannot make room."""

from __future__ import annotations

import pytest

from config.errors import ApiError
from models.placement import Holding, evictions

GB = 10**9


def test_nothing_is_evicted_when_the_model_fits():
    assert evictions([Holding("a", 1 * GB, True, 1.0)], 1 * GB, 3 * GB) == []


def test_least_recently_used_idle_models_go_first_and_only_as_many_as_needed():
    held = [
        Holding("recent", 1 * GB, True, 300.0),
        Holding("oldest", 1 * GB, True, 100.0),
        Holding("older", 1 * GB, True, 200.0),
    ]
    assert evictions(held, 1 * GB, 3 * GB) == ["oldest"]
    assert evictions(held, 2 * GB, 3 * GB) == ["oldest", "older"]


def test_busy_models_are_never_evicted():
    held = [Holding("busy", 2 * GB, False, 1.0), Holding("idle", 1 * GB, True, 9.0)]
    assert evictions(held, 1 * GB, 3 * GB) == ["idle"]
    with pytest.raises(ApiError) as caught:
        evictions(held, 2 * GB, 3 * GB)
    assert caught.value.status == 503 and caught.value.code == "insufficient_vram"


def test_a_model_bigger_than_the_budget_is_refused():
    with pytest.raises(ApiError) as caught:
        evictions([], 4 * GB, 3 * GB)
    assert caught.value.code == "insufficient_vram"


def test_a_node_holds_what_its_models_will_take_not_only_what_is_on_disk_now():
    """A Hugging Face model still downloading has no files yet: it counts at the size its load planned (the
    Hub's), so two big loads do not land on one node; a language model counts its KV budget and prompt cache
    too, which it fills only once it serves."""
    from config.settings import Settings
    from models.lifecycle import node_holdings
    from models.registry import ModelRecord

    settings = Settings(engine_kv_budget_gb=2.0, prompt_cache_gb=0.5)

    def record(model_id: str, model_type: str, **fields) -> ModelRecord:
        return ModelRecord(model_id=model_id, model_type=model_type, status="loading", created=0, **fields)

    records = [
        record("hub/big", "embeddings", path="hf://hub/big", planned_bytes=5 * GB, nodes=["a"]),
        record("chat", "lm", path="/nowhere", memory_bytes=1 * GB, nodes=["a", "b"]),
        record("embed", "embeddings", path="/nowhere", memory_bytes=1 * GB, nodes=["b"]),
    ]
    held = {
        node: sorted((h.model_id, h.size) for h in holdings)
        for node, holdings in node_holdings(records, settings).items()
    }
    assert held == {
        "a": [("chat", int(3.5 * GB)), ("hub/big", 5 * GB)],
        "b": [("chat", int(3.5 * GB)), ("embed", 1 * GB)],
    }
