"""Placement of replicas on nodes: spread, room, per-node budgets and eviction, and which node may serve what."""

from __future__ import annotations

import pytest

from config.errors import ApiError
from models.nodes import Node, allows
from models.placement import Holding, place

GB = 10**9
BIG, SMALL, FREE = Node("big", 2.0), Node("small", 1.0), Node("free", 0.0)


def test_a_model_goes_to_the_node_with_the_most_room():
    assert place(GB // 2, 1, [SMALL, BIG], {}).nodes == ["big"]
    held = {"big": [Holding("x", int(1.8 * GB), False, 0.0)]}
    assert place(GB // 2, 1, [SMALL, BIG], held).nodes == ["small"]


def test_replicas_spread_over_nodes_before_doubling_up():
    assert place(GB // 2, 2, [SMALL, BIG], {}).nodes == ["big", "small"]
    assert place(GB // 2, 3, [SMALL, BIG], {}).nodes == ["big", "small", "big"]
    assert place(GB // 2, 1, [SMALL, BIG], {}, already_on=["big"]).nodes == ["small"]


def test_a_node_without_a_budget_always_has_room():
    assert place(100 * GB, 2, [FREE], {}).nodes == ["free", "free"]


def test_a_node_that_fits_as_it_is_comes_before_one_that_would_evict():
    held = {"big": [Holding("idle", int(1.9 * GB), True, 1.0)]}
    placement = place(GB // 2, 1, [BIG, SMALL], held)
    assert placement.nodes == ["small"] and placement.evict == {}


def test_idle_models_are_evicted_per_node_least_recently_used_first():
    held = {
        "small": [Holding("old", GB // 2, True, 1.0), Holding("new", GB // 2, True, 9.0)],
        "big": [Holding("busy", 2 * GB, False, 0.0)],
    }
    placement = place(GB // 2, 1, [SMALL, BIG], held)
    assert placement.nodes == ["small"] and placement.evict == {"small": ["old"]}
    with pytest.raises(ApiError):
        place(GB // 2, 1, [SMALL, BIG], held, evict=False)


def test_replicas_that_cannot_all_fit_are_insufficient_vram_naming_the_nodes():
    with pytest.raises(ApiError) as raised:
        place(int(1.1 * GB), 2, [SMALL, BIG], {})
    assert raised.value.status == 503 and raised.value.code == "insufficient_vram"
    assert "replica 2 of 2" in raised.value.message and "small:" in raised.value.message


@pytest.mark.parametrize(
    ("patterns", "model_id", "model_type", "allowed"),
    [
        ("*", "any/model", "lm", True),
        ("mlx-community/*", "mlx-community/qwen", "lm", True),
        ("mlx-community/*", "other/qwen", "lm", False),
        ("type:embeddings", "x/minilm", "embeddings", True),
        ("type:embeddings", "x/chat", "lm", False),
        ("*,!nodes/*", "nodes/a", "lm", False),
        ("*,!type:image_generation", "x/flux", "image_generation", False),
        ("", "any/model", "lm", False),
    ],
)
def test_node_models_patterns(patterns, model_id, model_type, allowed):
    assert allows(patterns, model_id, model_type) is allowed


def test_an_evicted_model_leaves_only_the_node_that_needs_the_room():
    held = {
        "small": [Holding("both", GB, True, 1.0)],
        "big": [Holding("both", GB, True, 1.0), Holding("busy", GB // 2, False, 0.0)],
    }
    placement = place(GB, 1, [SMALL, BIG], held, already_on=["big"])
    assert placement.nodes == ["small"] and placement.evict == {"small": ["both"]}, "big keeps its replica"
    placement = place(GB, 2, [SMALL, BIG], held)
    assert placement.nodes == ["big", "small"] and placement.evict == {"big": ["both"], "small": ["both"]}
