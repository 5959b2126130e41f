"""Sampling options read from a request, the per-request random key, OpenAI's penalties and logprobs."""

from __future__ import annotations

import mlx.core as mx
import pytest

from config.errors import ApiError
from models.sampling import (
    KeyedSampler,
    SamplingOptions,
    logit_bias_processor,
    openai_penalties,
    options_from,
    samplers_for,
    token_logprobs,
)

VOCABULARY = 100


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"logit_bias": {"x": 1}}, "logit_bias"),
        ({"logit_bias": {"100": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias"),
        ({"n": 17}, "n"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_k": 101}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"seed": "seven"}, "seed"),
        ({"presence_penalty": True}, "presence_penalty"),
    ],
)
def test_a_value_that_cannot_be_applied_is_a_400_naming_it(payload, param):
    with pytest.raises(ApiError) as caught:
        options_from(payload, VOCABULARY)
    assert caught.value.status == 400 and caught.value.param == param


def test_options_are_read_with_defaults():
    options = options_from({"temperature": 0, "stop": "END", "top_logprobs": 2, "logit_bias": {"7": -100}}, VOCABULARY)
    assert options.greedy and options.stop == ("END",) and options.logprobs and options.top_logprobs == 2
    assert options.logit_bias == {7: -100.0} and options.n == 1 and options.max_tokens == 512


def test_greedy_rows_share_one_sampler_so_the_batch_samples_in_one_call():
    samplers = samplers_for(SamplingOptions(temperature=0, n=3))
    assert samplers[0] is samplers[1] is samplers[2]


def draw(sampler: KeyedSampler, steps: int = 12) -> list[int]:
    logprobs = mx.log(mx.softmax(mx.arange(VOCABULARY, dtype=mx.float32)[None] / 30, axis=-1))
    return [sampler(logprobs).item() for _ in range(steps)]


def test_a_seeded_sampler_repeats_whatever_the_global_random_state():
    options = SamplingOptions(temperature=1.0)
    mx.random.seed(1)
    first = draw(KeyedSampler(options, 7))
    mx.random.seed(999)
    mx.random.uniform(shape=(10,))
    assert draw(KeyedSampler(options, 7)) == first
    assert draw(KeyedSampler(options, 8)) != first


def test_the_sequences_of_a_seeded_request_differ_from_each_other():
    samplers = samplers_for(SamplingOptions(temperature=1.0, seed=3, n=2))
    assert draw(samplers[0]) != draw(samplers[1])


def test_openai_penalties_count_generated_tokens_only():
    prompt = [5, 5, 5]
    tokens = mx.array([*prompt, 9, 9, 4])
    logits = mx.zeros((1, 12))
    penalised = openai_penalties(len(prompt), presence=0.5, frequency=1.0)(tokens, logits)[0].tolist()
    assert penalised[5] == 0  # only in the prompt
    assert penalised[9] == -(0.5 + 2 * 1.0)
    assert penalised[4] == -(0.5 + 1.0)
    assert penalised[0] == 0


def test_logit_bias_is_added_to_its_tokens():
    biased = logit_bias_processor({3: -100.0, 4: 5.0})(mx.array([1]), mx.zeros((1, 6)))[0].tolist()
    assert biased == [0, 0, 0, -100, 5, 0]


def test_top_logprobs_are_sorted_and_include_the_sampled_token_value():
    logprobs = mx.log(mx.array([0.1, 0.5, 0.15, 0.25]))
    entry = token_logprobs(logprobs, 3, 3, lambda token: f"t{token}")
    assert entry["token"] == "t3" and entry["logprob"] == pytest.approx(logprobs[3].item())
    assert [alt["token"] for alt in entry["top_logprobs"]] == ["t1", "t3", "t2"]
    assert entry["bytes"] == list(b"t3")


@pytest.mark.parametrize("narrowing", [{"top_k": 1}, {"min_p": 1.0}, {"top_p": 0.01}])
def test_top_k_min_p_and_top_p_narrow_what_is_sampled(narrowing):
    sampler = KeyedSampler(SamplingOptions(temperature=2.0, **narrowing), seed=1)
    assert set(draw(sampler, 30)) == {VOCABULARY - 1}  # only the most likely token survives the filter
    assert len(set(draw(KeyedSampler(SamplingOptions(temperature=2.0), seed=1), 30))) > 1


def test_repetition_penalty_is_applied():
    from models.sampling import processors_for

    (penalty,) = processors_for(SamplingOptions(repetition_penalty=2.0), prompt_length=0)
    logits = penalty(mx.array([2]), mx.array([[1.0, 1.0, 4.0, -1.0]]))[0].tolist()
    assert logits == [1.0, 1.0, 2.0, -1.0]
