"""Speculative decoding inside the batch, with the real chat model stepped in this process (no services): rows that
draft beside rows that do not give the answers they give without drafting."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from models.batch import BatchSession, Ticket
from models.handlers import load_handler
from models.handlers.base import ServingLimits
from models.prompt_cache import PromptCache
from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR

TEXT = (
    "The committee met on Tuesday to review the budget. It approved funding for the new library, postponed the "
    "decision on the bridge repairs, and asked the finance office to report on parking revenue before March."
)
QUOTE = f"Repeat this text exactly:\n\n{TEXT}"
CODE = "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\nAdd type hints to this code."


@pytest.fixture(scope="module")
def sessions() -> Iterator[tuple[BatchSession, BatchSession]]:
    """The same model's batch with drafting (4 tokens) and without."""
    from models.prepare import main as prepare_models

    assert prepare_models([CHAT_MODEL]) == 0
    handler = load_handler("lm", CHAT_MODEL_DIR, 2048, ServingLimits(max_sequences=8, prompt_cache_entries=0))
    plain = BatchSession(
        handler.model,
        handler.tokenizer,
        handler.prompt_for,
        2048,
        max_sequences=8,
        kv_budget_bytes=10**9,
        prompt_cache=PromptCache(0, 0),
        draft_tokens=0,
    )
    assert handler.batch.draft_tokens == 4
    yield handler.batch, plain


class EveryDraftPays:
    """A step cost under which checking drafts always pays: every step with a draft checks it (whether it pays is
    the machine's business; these tests are about the answers)."""

    fitted = True

    def __call__(self, positions: int) -> float:
        return 1.0

    def record(self, positions: int, seconds: float) -> None:
        pass


def checking(batch: BatchSession) -> Any:
    """The batch's generation step, made to check every draft; its draft counts."""
    step = batch._generator()._generation_batch
    step.cost = EveryDraftPays()
    return step.stats


def ticket(text: str, **options: Any) -> Ticket:
    payload = {"messages": [{"role": "user", "content": text}], "max_tokens": 24, "temperature": 0, **options}
    return Ticket("chat", payload, lambda _event: None, lambda: False, lambda: False, Future(), "t")


def run(batch: BatchSession, *tickets: Ticket) -> list[str]:
    for one in tickets:
        batch.submit(one)
    while batch.busy:
        batch.step()
    return [one.future.result()["content"] for one in tickets]


def requests() -> list[Ticket]:
    """Rows that draft (quoting, editing code) beside rows that may not (a penalty, a JSON grammar) or find little
    to draft (free text)."""
    return [
        ticket(QUOTE),
        ticket(CODE),
        ticket("Write a short poem about the sea."),
        ticket(QUOTE, repetition_penalty=1.3),
        ticket("Give a JSON object with a name.", response_format={"type": "json_object"}),
    ]


def test_greedy_rows_that_draft_answer_as_they_do_without_drafting(sessions):
    drafting, plain = sessions
    stats = checking(drafting)
    expected = run(plain, *requests())
    before = (stats.accepted, stats.drafted)
    assert run(drafting, *requests()) == expected
    assert stats.accepted > before[0]  # drafts were checked, and some were kept
    assert stats.accepted - before[0] < stats.drafted - before[1]  # and some refused


def test_a_drafting_row_ends_on_its_stop_sequence_with_the_logprobs_of_its_tokens(sessions):
    """A stop sequence met while the row drafts ends the answer where it ends without drafting (the tokens kept
    after it in the same step are dropped); each token carries the log-probability the model gave it."""
    drafting, plain = sessions
    stats = checking(drafting)
    before = stats.accepted
    options = dict(stop=["library"], logprobs=True, top_logprobs=2)
    answers = []
    for batch in (plain, drafting):
        one = ticket(QUOTE, **options)
        run(batch, one)
        answers.append(one.future.result())
    expected, got = answers
    assert got["content"] == expected["content"] and got["finish_reason"] == expected["finish_reason"] == "stop"
    expected_entries, entries = (a["choices"][0]["logprobs"]["content"] for a in answers)
    assert [e["token"] for e in entries] == [e["token"] for e in expected_entries]
    assert [e["logprob"] for e in entries] == pytest.approx([e["logprob"] for e in expected_entries], abs=1e-3)
    assert stats.accepted > before


def test_seeded_rows_that_draft_sample_what_they_sample_without_drafting(sessions):
    """A sampled row draws each token with Gumbel noise from its own key for that token, so its checked drafts
    find the very tokens it samples without drafting, alone or beside others."""
    drafting, plain = sessions
    stats = checking(drafting)
    seeded = dict(temperature=0.8, seed=3)
    expected = run(plain, ticket(QUOTE, **seeded), ticket(CODE, temperature=1.0, seed=4))
    before = stats.accepted
    assert run(drafting, ticket(QUOTE, **seeded), ticket(CODE, temperature=1.0, seed=4)) == expected
    assert run(drafting, ticket("Name a colour.", temperature=1.0), ticket(QUOTE, **seeded))[1] == expected[0]
    assert stats.accepted > before
