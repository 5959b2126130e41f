"""Speculative decoding's parts without a model: the accept/reject rules, the lookup that drafts, the per-row
rollback of a batch's KV cache, and the estimates that decide when drafting pays."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import BatchKVCache

from models.speculative import PromptLookup, RowDrafts, StepCost, accept_greedy, accept_sampled, roll_back


def test_greedy_keeps_the_longest_prefix_the_model_agrees_with():
    assert accept_greedy([5, 6, 7], [5, 6, 9, 1]) == 2
    assert accept_greedy([5, 6, 7], [4, 6, 7, 1]) == 0
    assert accept_greedy([5, 6, 7], [5, 6, 7, 1]) == 3


def _noise(key: mx.array, positions: int, vocabulary: int) -> mx.array:
    return mx.random.gumbel(shape=(positions, vocabulary), key=key)


def _first_two(draft: list[int], logits: mx.array, runs: int) -> np.ndarray:
    """How often each pair of first two tokens comes, over ``runs`` draws with fresh noise."""
    vocabulary = logits.shape[-1]
    pairs = np.zeros((vocabulary, vocabulary))
    key = mx.random.key(7)
    for _ in range(runs):
        key, step, after = mx.random.split(key, 3)
        kept, token = accept_sampled(draft, logits, _noise(step, len(draft) + 1, vocabulary))
        emitted = [*draft[:kept], token]
        if len(emitted) == 1:  # the first draft token refused: the second token comes at the next step, from p_1
            emitted.append(int(mx.argmax(logits[1] + _noise(after, 1, vocabulary)[0]).item()))
        pairs[emitted[0], emitted[1]] += 1
    return pairs / runs


@pytest.mark.parametrize("draft", [[1, 2], [3, 0]])
def test_sampled_rows_keep_the_models_distribution(draft):
    """Whatever the draft (a likely one, an unlikely one), the first two tokens come with the model's own joint
    probability p0(a) * p1(b): speculative sampling changes the speed, never the distribution."""
    probabilities = mx.array([[0.1, 0.5, 0.3, 0.1], [0.25, 0.05, 0.6, 0.1], [0.4, 0.3, 0.2, 0.1]])
    logits = mx.log(probabilities)
    runs = 4000
    measured = _first_two(draft, logits, runs)
    p = np.array(probabilities.tolist())
    expected = np.outer(p[0], p[1])
    # three standard errors of each cell's frequency
    assert np.all(np.abs(measured - expected) <= 3 * np.sqrt(expected * (1 - expected) / runs) + 1e-9)


def test_a_draft_token_is_kept_with_its_probability_and_never_drawn_once_refused():
    logits = mx.log(mx.array([[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]]))
    key, kept_count, runs = mx.random.key(3), 0, 2000
    for _ in range(runs):
        key, step = mx.random.split(key)
        kept, token = accept_sampled([1], logits, _noise(step, 2, 3))
        kept_count += kept
        assert kept == 1 or token != 1
    assert abs(kept_count / runs - 0.5) <= 3 * np.sqrt(0.25 / runs)


def test_lookup_drafts_what_followed_the_latest_occurrence():
    lookup = PromptLookup()
    lookup.extend([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 6, 2, 3])
    assert lookup.draft(3) == [7, 8, 6]  # "2 3" last seen before "7 8 6"
    lookup.extend([4])
    assert lookup.draft(2) == [5, 9]  # "2 3 4" is longer than "3 4" alone, and matches at the start
    lookup.extend([42])
    assert lookup.draft(4) == []


def _rows(lengths: list[int]) -> tuple[BatchKVCache, list[mx.array]]:
    """A left-padded batch cache of rows of ``lengths`` positions, and each row's own keys."""
    longest = max(lengths)
    own = [mx.random.normal((1, 2, n, 4)) for n in lengths]
    cache = BatchKVCache([longest - n for n in lengths])
    keys = mx.concatenate([mx.pad(k, [(0, 0), (0, 0), (longest - k.shape[2], 0), (0, 0)]) for k in own])
    cache.update_and_fetch(keys, keys)
    return cache, own


def test_each_row_of_a_batch_cache_rolls_back_by_its_own_count():
    cache, own = _rows([5, 3, 7])
    fed = mx.random.normal((3, 2, 4, 4))
    cache.update_and_fetch(fed, fed)
    rejected = [1, 3, 2]
    roll_back([cache], rejected)
    for row, (k, r) in enumerate(zip(own, rejected, strict=True)):
        expected = mx.concatenate([k, fed[row : row + 1, :, : 4 - r]], axis=2)
        assert mx.array_equal(cache.extract(row).keys, expected)
    assert cache.offset.tolist() == [5 + 3, 3 + 1, 7 + 2]
    assert min(cache.left_padding.tolist()) == 0  # padding every row had is cut off
    # the next token lands after each row's kept positions
    step = mx.random.normal((3, 2, 1, 4))
    cache.update_and_fetch(step, step)
    assert mx.array_equal(cache.extract(1).keys[..., -2:, :], mx.concatenate([fed[1:2, :, :1], step[1:2]], axis=2))


def test_a_row_whose_drafts_keep_failing_stops_paying_for_them():
    cost = StepCost()
    for _ in range(50):
        cost.record(1, 0.060)
        cost.record(5, 0.110)
    assert cost(5) / cost(1) == pytest.approx(0.110 / 0.060, rel=0.02)

    def pays(row: RowDrafts) -> bool:
        """Whether checking one draft token of this row alone beats a plain step."""
        return (1 + row.expected_tokens(1)) / cost(2) > 1 / cost(1)

    row = RowDrafts()
    assert pays(row)  # a new row is given a chance
    for _ in range(10):
        row.learn(0, 4)
    assert not pays(row)
    for _ in range(10):  # drafts it only proposed came true: it drafts again
        row.propose([1, 2])
        for token in (0, 1, 2):
            row.observe(token)
    assert pays(row)
