"""The batch of one worker, driven step by step in this process with the real chat model (no services).

Stepping the batch by hand makes "mid-batch" exact: a request is cancelled after a known number of steps while
the others are still generating, and nothing depends on how fast the machine is.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import mlx.core as mx
import pytest

from models.batch import BatchSession, Ticket
from models.handlers import load_handler
from models.handlers.base import ServingLimits
from models.prompt_cache import PromptCache
from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR

PROMPTS = ["What is the capital of France?", "Name a colour.", "Count to five.", "Say hi."]


@pytest.fixture(scope="module")
def batch() -> Iterator[BatchSession]:
    from models.prepare import main as prepare_models

    assert prepare_models([CHAT_MODEL]) == 0
    handler = load_handler("lm", CHAT_MODEL_DIR, 2048, ServingLimits(max_sequences=8, prompt_cache_entries=0))
    yield handler.batch


class Flag:
    def __init__(self) -> None:
        self.raised = False

    def __call__(self) -> bool:
        return self.raised


def ticket(text: str, cancelled: Flag | None = None, deltas: list | None = None, **options: Any) -> Ticket:
    flag = cancelled or Flag()
    payload = {"messages": [{"role": "user", "content": text}], "max_tokens": 12, "temperature": 0, **options}
    if deltas is not None:
        payload["stream"] = True
    return Ticket(
        "chat", payload, (deltas.append if deltas is not None else lambda _e: None), flag, flag, Future(), "t"
    )


def deltas_of(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The text deltas among a request's events (the batch also emits progress events during a prefill)."""
    return [event for event in events if event["type"] == "delta"]


def run(batch: BatchSession, *tickets: Ticket) -> list[dict[str, Any]]:
    for one in tickets:
        batch.submit(one)
    while batch.busy:
        batch.step()
    return [one.future.result() for one in tickets]


def test_concurrent_greedy_requests_get_the_answers_they_get_alone(batch):
    alone = [run(batch, ticket(text))[0]["content"] for text in PROMPTS]
    together = run(batch, *(ticket(text) for text in PROMPTS))
    assert [result["content"] for result in together] == alone
    assert all(result["usage"]["completion_tokens"] >= 1 for result in together)


def test_a_request_cancelled_mid_batch_leaves_the_others_unchanged(batch):
    alone = [run(batch, ticket(text, max_tokens=16))[0]["content"] for text in PROMPTS[1:]]
    flag, streamed = Flag(), []
    victim = ticket(PROMPTS[0], cancelled=flag, deltas=streamed, max_tokens=16)
    others = [ticket(text, max_tokens=16) for text in PROMPTS[1:]]
    for one in (victim, *others):
        batch.submit(one)
    while len(deltas_of(streamed)) < 3:  # the victim has generated three tokens beside the others
        batch.step()
    assert len(batch.running) == 4
    flag.raised = True
    while batch.busy:
        batch.step()
    assert victim.future.result()["finish_reason"] == "cancelled"
    assert [one.future.result()["content"] for one in others] == alone


def test_seeded_requests_repeat_alone_and_beside_others(batch):
    seeded = dict(temperature=1.0, seed=11, max_tokens=10)
    alone = run(batch, ticket("Name a colour.", **seeded))[0]["content"]
    beside = run(batch, ticket("Say hi.", temperature=1.0), ticket("Name a colour.", **seeded), ticket("Count."))
    assert beside[1]["content"] == alone


def test_the_greedy_token_carries_the_highest_logprob(batch):
    result = run(batch, ticket("What is the capital of France?", logprobs=True, top_logprobs=3))[0]
    entries = result["choices"][0]["logprobs"]["content"]
    assert len(entries) == result["usage"]["completion_tokens"]
    for entry in entries:
        best = entry["top_logprobs"][0]
        assert best["token"] == entry["token"] and best["logprob"] == pytest.approx(entry["logprob"])
        assert [alt["logprob"] for alt in entry["top_logprobs"]] == sorted(
            (alt["logprob"] for alt in entry["top_logprobs"]), reverse=True
        )


def test_n_gives_that_many_choices(batch):
    result = run(batch, ticket("Name a colour.", n=3, temperature=1.0, seed=5, max_tokens=8))[0]
    assert [choice["index"] for choice in result["choices"]] == [0, 1, 2]
    assert len({choice["content"] for choice in result["choices"]}) > 1  # three samples, not one copied
    assert 3 <= result["usage"]["completion_tokens"] <= 3 * 8


def test_logit_bias_and_penalties_change_the_greedy_answer(batch):
    question = "Count from 1 to 20, separated by commas."
    plain = run(batch, ticket(question, max_tokens=16))[0]["content"]
    tokens = batch.tokenizer.encode(plain, add_special_tokens=False)
    assert len(set(tokens)) < len(tokens)  # the plain answer repeats tokens, so the penalty has work to do
    banned = run(batch, ticket(question, max_tokens=16, logit_bias={str(tokens[0]): -100}))[0]["content"]
    assert batch.tokenizer.encode(banned, add_special_tokens=False)[0] != tokens[0]
    penalised = run(batch, ticket(question, max_tokens=16, frequency_penalty=2.0, presence_penalty=2.0))[0]["content"]
    assert penalised != plain


def test_text_held_back_for_a_possible_stop_sequence_is_streamed_when_the_answer_ends(batch):
    streamed: list = []
    result = run(batch, ticket("What is the capital of France?", deltas=streamed, stop=[". Z"], max_tokens=20))[0]
    assert result["finish_reason"] == "stop" and result["content"].endswith(".")  # ended by its end-of-sequence
    assert "".join(event["content"] for event in deltas_of(streamed)) == result["content"]


def test_answers_served_from_the_prompt_cache_are_the_answers_computed_cold(batch):
    question = "What is the capital of France?"
    follow_up = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]

    def chat(messages: list[dict[str, str]], **options: Any) -> dict[str, Any]:
        one = ticket("", **options)
        one.payload["messages"] = messages
        return run(batch, one)[0]

    cold = [chat(ask_one, max_tokens=10) for ask_one in ([{"role": "user", "content": question}], follow_up)]
    cold_choices = chat([{"role": "user", "content": question}], n=2, max_tokens=10)
    batch.prompt_cache = PromptCache(max_entries=8, max_bytes=10**9)
    try:
        first = chat([{"role": "user", "content": question}], max_tokens=10)
        again = chat([{"role": "user", "content": question}], max_tokens=10)  # an exact hit: all but one token
        continued = chat(follow_up, max_tokens=10)  # its prefix is the first request's prompt and answer
        choices = chat([{"role": "user", "content": question}], n=2, max_tokens=10)  # one cache copied per sequence
    finally:
        batch.prompt_cache = PromptCache(0, 0)
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == again["usage"]["prompt_tokens"] - 1
    assert continued["usage"]["prompt_tokens_details"]["cached_tokens"] > first["usage"]["prompt_tokens"]
    assert [first["content"], again["content"], continued["content"]] == [
        cold[0]["content"],
        cold[0]["content"],
        cold[1]["content"],
    ]
    assert [c["content"] for c in choices["choices"]] == [c["content"] for c in cold_choices["choices"]]


def test_the_prompt_cache_holds_only_the_memory_it_counts(batch):
    """Rows taken out of a full batch keep only their own K/V: 16 unique ~150-token conversations through the
    8-row batch leave the active memory within what the prompt cache counts (unevaluated, each kept row held the
    whole batch's buffers: several times as much)."""
    filler = "Tell me about the weather in the mountains, the rivers, the valleys and the towns. " * 8
    gc.collect()
    before = mx.get_active_memory()
    batch.prompt_cache = PromptCache(max_entries=64, max_bytes=10**10)
    try:
        run(batch, *(ticket(f"Conversation {i}. {filler}", max_tokens=4) for i in range(16)))
        gc.collect()
        held = mx.get_active_memory() - before
        counted = batch.prompt_cache.nbytes
    finally:
        batch.prompt_cache = PromptCache(0, 0)
    assert len(batch.running) == 0 and counted > 16 * 150 * 30 * 2 * 3 * 64 * 4  # 16 prompts of 150+ tokens' K/V
    assert held <= counted + 16 * 2**20, f"{held / 2**20:.0f} MiB held for {counted / 2**20:.0f} MiB counted"


def test_a_request_the_model_cannot_take_is_its_own_400_and_the_batch_goes_on(batch):
    from config.errors import ApiError

    broken = Ticket("completion", {"max_tokens": 4}, lambda _e: None, Flag(), Flag(), Future(), "broken")
    batch.submit(broken)  # no prompt: preparing it fails outside the request checks
    with pytest.raises(ApiError) as caught:
        broken.future.result(timeout=0)
    assert caught.value.status == 400 and "KeyError" in caught.value.message
    assert run(batch, ticket("Say hi.", max_tokens=4))[0]["usage"]["completion_tokens"] >= 1
