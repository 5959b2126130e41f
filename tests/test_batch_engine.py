"""The batch of one worker, driven step by step in this process with the real chat model (no services).

Stepping the batch by hand makes "mid-batch" exact: a request is cancelled after a known number of steps while
the others are still generating, and nothing depends on how fast the machine is. The engine thread's own tests
(priorities of its inbox, a batch line giving way) hold it at a checkpoint between two tokens instead.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import mlx.core as mx
import pytest

from models.batch import (
    BACKGROUND_PREFILL_BATCH,
    PREEMPT_AFTER_TOKENS,
    PREEMPT_FOR_URGENT_AFTER_TOKENS,
    PREEMPTIBLE_FROM,
    URGENT_LINGER_SECONDS,
    BatchSession,
    Ticket,
)
from models.engine import Engine
from models.handlers import load_handler
from models.handlers.base import ServingLimits
from models.prompt_cache import PromptCache
from models.prompt_disk import DiskPromptCache, read_tokens
from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR

PROMPTS = ["What is the capital of France?", "Name a colour.", "Count to five.", "Say hi."]


@pytest.fixture(scope="module")
def batch() -> Iterator[BatchSession]:
    from models.prepare import main as prepare_models

    assert prepare_models([CHAT_MODEL]) == 0
    limits = ServingLimits(max_sequences=8, prompt_cache_entries=0, background_rows_beside_interactive=8)
    handler = load_handler("lm", CHAT_MODEL_DIR, 2048, limits)
    yield handler.batch


class Flag:
    def __init__(self) -> None:
        self.raised = False

    def __call__(self) -> bool:
        return self.raised


def ticket(
    text: str, cancelled: Flag | None = None, deltas: list | None = None, priority: int = 0, **options: Any
) -> Ticket:
    flag = cancelled or Flag()
    payload = {"messages": [{"role": "user", "content": text}], "max_tokens": 12, "temperature": 0, **options}
    if deltas is not None:
        payload["stream"] = True
    emit = deltas.append if deltas is not None else lambda _e: None
    return Ticket("chat", payload, emit, flag, flag, Future(), "t", priority=priority)


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


def test_a_long_prompt_is_on_disk_before_its_answer_ends(batch, tmp_path):
    """The disk tier gets a long prompt's K/V when its prefill ends (a worker killed while the answer is written
    still finds it); the finished prompt and answer replace that file."""
    disk = DiskPromptCache(tmp_path, "chat/weights", min_tokens=64, max_bytes=10**9)
    batch.prompt_cache = PromptCache(0, 0, disk)
    one = ticket(f"Inventory. {' '.join(f'Box {i} holds {i * 7} marbles.' for i in range(12))} Which box is red?")
    try:
        batch.submit(one)
        while not any(sequence.tokens for sequence in batch.sequences.values()):
            batch.step()
        prompt = next(iter(batch.running)).prompt
        disk.flush()
        while_answering = [read_tokens(path).tolist() for path in disk.folder.glob("*.safetensors")]
        assert batch.busy and len(prompt) >= 64
        while batch.busy:
            batch.step()
        disk.flush()
        after = [read_tokens(path).tolist() for path in disk.folder.glob("*.safetensors")]
    finally:
        batch.prompt_cache = PromptCache(0, 0)
    assert len(while_answering) == 1 and while_answering[0][: len(prompt)] == prompt
    assert len(while_answering[0]) < len(prompt) + one.future.result()["usage"]["completion_tokens"]
    assert len(after) == 1 and after[0][: len(while_answering[0])] == while_answering[0]
    assert len(after[0]) > len(while_answering[0])


def test_a_request_the_model_cannot_take_is_its_own_400_and_the_batch_goes_on(batch):
    from config.errors import ApiError

    broken = Ticket("completion", {"max_tokens": 4}, lambda _e: None, Flag(), Flag(), Future(), "broken")
    batch.submit(broken)  # no prompt: preparing it fails outside the request checks
    with pytest.raises(ApiError) as caught:
        broken.future.result(timeout=0)
    assert caught.value.status == 400 and "KeyError" in caught.value.message
    assert run(batch, ticket("Say hi.", max_tokens=4))[0]["usage"]["completion_tokens"] >= 1


# --- priorities -----------------------------------------------------------------------------------------------

LINE = 10
"""A batch line's priority (``tasks.batches.ENGINE_PRIORITY``)."""
STORIES = ["a lighthouse", "a red fox", "the moon", "a lost key", "an old train", "a river", "a baker", "a storm"]


def story(topic: str, **options: Any) -> Ticket:
    """A batch line: 16 tokens, 8 before it may give way (``PREEMPT_AFTER_TOKENS``) and 8 after."""
    return ticket(f"Write a long story about {topic}.", priority=LINE, **{"max_tokens": 16, **options})


@pytest.fixture(scope="module")
def stories_alone(batch: BatchSession) -> list[dict[str, Any]]:
    """The answers of the lines of ``STORIES`` run together with nothing else, once for the tests that compare."""
    return run(batch, *(story(topic) for topic in STORIES))


def tokens_of(batch: BatchSession, one: Ticket) -> int:
    return max((len(s.tokens) for r in batch.running if r.ticket is one for s in r.sequences), default=0)


def join_until_they_may_give_way(batch: BatchSession, lines: list[Ticket]) -> None:
    """Submits ``lines`` and steps until each has run the tokens after which a row may give way."""
    for one in lines:
        batch.submit(one)
    while batch.busy and min(tokens_of(batch, one) for one in lines) < PREEMPT_AFTER_TOKENS:
        batch.step()


@contextmanager
def keeping_rows(batch: BatchSession, rows: int) -> Iterator[None]:
    """Background work keeps ``rows`` beside urgent requests, with a linger no test outlasts; restored after."""
    batch.background_rows_beside_interactive, batch.urgent_linger_seconds = rows, 600
    try:
        yield
    finally:
        batch.background_rows_beside_interactive = batch.max_sequences
        batch.urgent_linger_seconds = URGENT_LINGER_SECONDS
        batch._urgent_until = 0.0


def test_waiting_requests_join_most_urgent_first(batch):
    """A full batch; a batch line, a job and an interactive request wait, and join in that order of urgency as
    rows leave (no row gives way here: they are never old enough)."""
    batch.preempt_after_tokens, given_way = 10**6, batch.preemptions
    batch.preempt_for_urgent_after_tokens = 10**6
    try:
        lines = [story(topic, max_tokens=4 + i) for i, topic in enumerate(STORIES)]
        for one in lines:
            batch.submit(one)
        while len(batch.running) < len(lines):  # lines join the prefill a few at a time
            batch.step()
        waiting = {"line": story("a castle", max_tokens=4), "job": ticket("Say hi.", priority=5, max_tokens=4)}
        waiting["interactive"] = ticket("Name a colour.", max_tokens=4)
        for one in waiting.values():
            batch.submit(one)
        joined: list[str] = []
        while batch.busy:
            batch.step()
            for name, one in waiting.items():
                if name not in joined and any(r.ticket is one for r in batch.running):
                    joined.append(name)
    finally:
        batch.preempt_after_tokens = PREEMPT_AFTER_TOKENS
        batch.preempt_for_urgent_after_tokens = PREEMPT_FOR_URGENT_AFTER_TOKENS
    assert joined == ["interactive", "job", "line"]
    assert batch.preemptions == given_way


def test_a_batch_line_gives_way_to_an_interactive_request_and_goes_on_unchanged(batch):
    """Eight batch lines fill the batch; an interactive request arrives and joins at the next step, the line that
    arrived last leaves with its K/V, and goes on later to exactly the answer it gives uninterrupted: the same
    greedy tokens, a seeded sampler and a penalty (processors) restored, ``max_tokens`` counted over both parts."""
    options = [{} for _ in STORIES]
    options[-1] = {"temperature": 0.8, "seed": 7, "frequency_penalty": 0.5}  # the line that will give way
    alone = run(batch, *(story(topic, **extra) for topic, extra in zip(STORIES, options, strict=True)))
    question = ticket("What is the capital of France?", max_tokens=8)
    question_alone = run(batch, question)[0]

    streamed: list[dict[str, Any]] = []
    lines = [story(topic, **extra) for topic, extra in zip(STORIES[:-1], options, strict=False)]
    lines.append(story(STORIES[-1], deltas=streamed, **options[-1]))
    join_until_they_may_give_way(batch, lines)
    assert len(batch.running) == batch.max_sequences
    given_way = batch.preemptions
    interactive = ticket("What is the capital of France?", max_tokens=8)
    batch.submit(interactive)
    batch.step()
    assert any(r.ticket is interactive for r in batch.running)  # it joined at the next step
    assert [r.ticket for r in batch.pending] == [lines[-1]]  # the last line to arrive gave way
    assert batch.pending[0].sequences[0].paused is not None  # with the K/V of its prompt and answer so far
    assert batch.preemptions == given_way + 1
    while batch.busy:
        batch.step()
    assert interactive.future.result()["content"] == question_alone["content"]
    results = [one.future.result() for one in lines]
    assert [r["content"] for r in results] == [r["content"] for r in alone]
    assert [r["usage"]["completion_tokens"] for r in results] == [r["usage"]["completion_tokens"] for r in alone]
    assert results[-1]["finish_reason"] == alone[-1]["finish_reason"]
    assert "".join(event["content"] for event in deltas_of(streamed)) == results[-1]["content"]


def test_batch_lines_keep_few_rows_while_an_interactive_request_runs_and_go_on_unchanged(batch, stories_alone):
    """Background work keeps ``background_rows_beside_interactive`` rows while an interactive request runs (every
    row lengthens every step) and for a linger after it; the others give way with their K/V, come back then, and
    end with the answers they give uninterrupted."""
    question_alone = run(batch, ticket("What is the capital of France?", max_tokens=8))[0]
    lines = [story(topic) for topic in STORIES]
    join_until_they_may_give_way(batch, lines)
    with keeping_rows(batch, 2):
        interactive = ticket("What is the capital of France?", max_tokens=8)
        batch.submit(interactive)
        batch.step()
        assert any(r.ticket is interactive for r in batch.running)
        assert batch._background_rows() == 2 and all(r.sequences[0].paused is not None for r in batch.pending)
        while not interactive.future.done():
            batch.step()
            assert batch._background_rows() <= 2
        batch.step()
        assert batch._background_rows() <= 2  # during the linger after the last interactive request
        batch._urgent_until = 0.0  # the linger is over
        batch.step()
        assert batch._background_rows() > 2  # the lines that gave way are back
    while batch.busy:
        batch.step()
    assert interactive.future.result()["content"] == question_alone["content"]
    assert [one.future.result()["content"] for one in lines] == [r["content"] for r in stories_alone]


def test_rows_left_free_by_lines_that_gave_way_are_open_to_the_next_interactive_request(batch):
    """With lines keeping no row beside interactive requests, every line gives way to the first one and waits to
    join again: the rows they left are free for a second interactive request (the engine takes it from its inbox
    at once), not held for the lines until they can run, which is never while interactive requests keep coming."""
    lines = [story(topic) for topic in STORIES]
    join_until_they_may_give_way(batch, lines)
    with keeping_rows(batch, 0):
        first = ticket("What is the capital of France?", max_tokens=8)
        batch.submit(first)
        batch.step()
        assert [r.ticket for r in batch.running] == [first] and len(batch.pending) == len(lines)
        assert not batch.has_room, "the lines that gave way wait for their rows"
        assert batch.could_make_room_for(0), "but an interactive request comes before them"
        assert not batch.could_make_room_for(LINE), "and another line does not"
        second = ticket("Name a colour.", max_tokens=8)
        batch.submit(second)
        batch.step()
        assert [r.ticket for r in batch.running] == [first, second]
    while batch.busy:
        batch.step()
    assert all(one.future.result()["content"] for one in lines)


def test_a_line_whose_kv_would_pass_the_budget_gives_way_without_it_and_goes_on_unchanged(batch, stories_alone):
    """The K/V a row keeps when it gives way counts in the worker's KV budget: with no room left beside the batch
    and the request it makes way for, the row keeps none, and later computes its text again to the same answer."""
    lines = [story(topic) for topic in STORIES]
    join_until_they_may_give_way(batch, lines)
    budget = batch.kv_budget_bytes
    batch.kv_budget_bytes = batch._kv_of(batch.running)  # the full batch exactly: no room for kept K/V
    try:
        interactive = ticket("What is the capital of France?", max_tokens=8)
        batch.submit(interactive)
        batch.step()
        assert [r.ticket for r in batch.pending] == [lines[-1]]
        assert batch.pending[0].sequences[0].paused is None and batch.paused_bytes() == 0
    finally:
        batch.kv_budget_bytes = budget
    while batch.busy:
        batch.step()
    assert [one.future.result()["content"] for one in lines] == [r["content"] for r in stories_alone]
    assert interactive.future.result()["finish_reason"] in ("stop", "length")


def test_a_line_that_gave_way_and_is_cancelled_ends_with_what_it_generated(batch):
    flag = Flag()
    lines = [story(topic) for topic in STORIES[:-1]]
    victim = story(STORIES[-1], cancelled=flag)
    for one in (*lines, victim):
        batch.submit(one)
    while batch.busy and min(tokens_of(batch, one) for one in (*lines, victim)) < PREEMPT_AFTER_TOKENS:
        batch.step()
    batch.submit(ticket("Say hi.", max_tokens=30))
    batch.step()
    assert [r.ticket for r in batch.pending] == [victim]
    flag.raised = True
    batch.step()
    assert victim.future.done() and victim.future.result()["finish_reason"] == "cancelled"
    assert victim.future.result()["usage"]["completion_tokens"] >= PREEMPT_AFTER_TOKENS
    while batch.busy:
        batch.step()


WAVE = [f"{topic}, part {part}" for part in range(2) for topic in STORIES]
"""16 lines sent together: two prefill batches (``PREFILL_BATCH``)."""


def wide_batch(batch: BatchSession) -> BatchSession:
    """A batch of 24 rows on the same model, with the default rows and linger for background work: a wave of
    ``WAVE`` lines and the interactive request fit in it at once."""
    return BatchSession(
        batch.model,
        batch.tokenizer,
        batch.prompt_for,
        batch.context_length,
        max_sequences=24,
        kv_budget_bytes=batch.kv_budget_bytes,
        prompt_cache=PromptCache(0, 0),
    )


def test_an_interactive_prompt_is_prefilled_before_a_wave_of_batch_lines(batch):
    """16 batch lines arrive at once in a batch of 24 rows: they join the generator one prefill batch at a time,
    so an interactive request sent just after them has its first token before the last lines have theirs (mlx-lm
    prefills in arrival order: inserted all at once, the lines would all go first)."""
    wide = wide_batch(batch)
    lines = [story(topic, max_tokens=4) for topic in WAVE]
    for one in lines:
        wide.submit(one)
    wide.step()
    interactive = ticket("Say hi.", max_tokens=4)
    wide.submit(interactive)

    def started(one: Ticket) -> bool:
        return one.future.done() or any(s.tokens for r in wide.running if r.ticket is one for s in r.sequences)

    while not started(interactive):
        wide.step()
    assert not all(started(one) for one in lines)
    while wide.busy:
        wide.step()
    assert interactive.future.result()["usage"]["completion_tokens"] >= 1
    assert all(one.future.result()["usage"]["completion_tokens"] >= 1 for one in lines)


def test_lines_that_have_just_joined_leave_at_once_for_an_interactive_request(batch):
    """A wave of 16 lines has just joined: the first ones have their first token, the rest wait for their prefill.
    An interactive request arrives and, at the next step, runs with no line beside it (the young rows gave way
    with their K/V, the others went back in line), without waiting for the lines' first 8 tokens. The K/V kept
    stays a view of the batch's buffers until the interactive request has its first token (it does not wait for
    the copy), then is an array of its own. Every line still ends with the answer it gives uninterrupted."""
    wide = wide_batch(batch)
    topics = WAVE
    uninterrupted = [r["content"] for r in run(wide, *(story(topic, max_tokens=6) for topic in topics))]
    lines = [story(topic, max_tokens=6) for topic in topics]
    for one in lines:
        wide.submit(one)
    while not any(tokens_of(wide, one) for one in lines):
        wide.step()
    assert all(tokens_of(wide, one) < PREEMPT_AFTER_TOKENS for one in lines)
    interactive = ticket("Say hi.", max_tokens=4)
    wide.submit(interactive)
    wide.step()
    assert [r.ticket for r in wide.running] == [interactive]
    assert all(r.priority >= PREEMPTIBLE_FROM for r in wide.pending) and len(wide.pending) == len(lines)
    assert wide.paused_bytes() > 0 and wide._unsettled, "the lines' K/V copied before the interactive first token"
    while not tokens_of(wide, interactive) and not interactive.future.done():
        assert wide._unsettled
        wide.step()
    assert not wide._unsettled
    while wide.busy:
        wide.step()
    assert interactive.future.result()["usage"]["completion_tokens"] >= 1
    assert [one.future.result()["content"] for one in lines] == uninterrupted


def test_a_step_decodes_or_prefills_and_lines_join_the_prefill_a_few_at_a_time(batch):
    """Six lines sent together join the prefill at most ``BACKGROUND_PREFILL_BATCH`` at a time; two more sent once
    those generate are prefilled beside them. Each step of the generator either decodes or prefills, never both
    (mlx-lm's own call does both, and a request that came during it waited for both: 0.8 s beside 32 lines on the
    2-core machine). Each line ends with the answer it gives alone."""
    wide = wide_batch(batch)
    topics = [*STORIES[:6], *WAVE[-2:]]
    alone = [run(wide, story(topic, max_tokens=8))[0]["content"] for topic in topics]
    lines = [story(topic, max_tokens=8) for topic in topics]
    first, then = lines[:6], lines[6:]
    longest = max(len(wide.prompt_for("chat", one.payload)) for one in lines)
    steps = []

    def step() -> None:
        with wide._generator().stats() as done:
            wide.step()
        steps.append((done.prompt_tokens, done.generation_steps))

    for one in first:
        wide.submit(one)
    while not all(tokens_of(wide, one) for one in first):
        step()
    decoding = len(steps)
    for one in then:
        wide.submit(one)
    while wide.busy:
        step()
    assert not [one for one in steps if all(one)], "a step both prefilled and decoded"
    assert any(prefilled for prefilled, _ in steps[decoding:]), "the later lines were not prefilled beside the others"
    assert 0 < max(prefilled for prefilled, _ in steps) <= BACKGROUND_PREFILL_BATCH * longest
    assert [one.future.result()["content"] for one in lines] == alone


def test_lines_sent_back_in_line_keep_their_prefill_once_the_interactive_request_has_its_first_token(batch):
    """Lines still in their prefill go back in line for an interactive request; what was prefilled of them goes to
    the prompt cache after the request's first token (the copy does not delay it), and they later start from
    it."""
    wide = wide_batch(batch)
    wide.prompt_cache = PromptCache(max_entries=16, max_bytes=10**9)
    lines = [story(topic, max_tokens=4) for topic in STORIES[:BACKGROUND_PREFILL_BATCH]]
    for one in lines:
        wide.submit(one)
    wide.step()  # the lines' prompts prefilled, none has a token yet
    interactive = ticket("Say hi.", max_tokens=4)
    wide.submit(interactive)
    wide.step()
    assert [r.ticket for r in wide.running] == [interactive] and len(wide.pending) == len(lines)
    while not tokens_of(wide, interactive) and not interactive.future.done():
        assert len(wide.prompt_cache) == 0
        wide.step()
    assert len(wide.prompt_cache) == len(lines)
    while wide.busy:
        wide.step()
    for one in lines:
        usage = one.future.result()["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


class Gate:
    """A checkpoint hook that holds the engine thread at a request's checkpoint once ``ready`` says so."""

    def __init__(self, request_id: str, ready: Any = lambda: True) -> None:
        self.request_id, self.ready = request_id, ready
        self.reached, self.opened = threading.Event(), threading.Event()

    def __call__(self, request_id: str, _cancelled: Any, _shown: bool) -> None:
        if request_id == self.request_id and not self.opened.is_set() and self.ready():
            self.reached.set()
            self.opened.wait(60)


@pytest.fixture(scope="module")
def engine(batch) -> Iterator[Engine]:
    """An engine thread of its own (MLX state belongs to the thread that made it) batching one request at a time."""
    limits = ServingLimits(max_sequences=1, prompt_cache_entries=0)
    engine = Engine(lambda: load_handler("lm", CHAT_MODEL_DIR, 2048, limits), warmup=False)
    engine.start()
    yield engine
    engine.stop()


def submit(engine: Engine, name: str, priority: int, events: list | None = None, **options: Any) -> Future:
    payload = {"messages": [{"role": "user", "content": f"Write a long story about {name}."}], "temperature": 0}
    payload.update({"max_tokens": 4, "stream": True, **options})
    emit = events.append if events is not None else lambda _e: None
    return engine.submit("chat", payload, emit, lambda: False, name, priority)


def finishing_order(futures: dict[str, Future]) -> list[str]:
    order: list[str] = []
    for name, future in futures.items():
        future.add_done_callback(lambda _f, n=name: order.append(n))
    for future in futures.values():
        future.result(timeout=120)
    return order


def test_the_engine_takes_waiting_work_most_urgent_first(engine):
    gate = Gate("blocker")
    engine.checkpoint_hooks.append(gate)
    try:
        futures = {"blocker": submit(engine, "blocker", 0)}
        assert gate.reached.wait(60)
        for name, priority in (("line", LINE), ("low job", 9), ("job", 5), ("interactive", 0)):
            futures[name] = submit(engine, name, priority)
        gate.opened.set()
        order = finishing_order(futures)
    finally:
        engine.checkpoint_hooks.remove(gate)
    assert order == ["blocker", "interactive", "job", "low job", "line"]


def test_the_engine_lets_a_batch_line_give_way_to_an_interactive_request(engine):
    alone = submit(engine, "a lighthouse", LINE, max_tokens=30).result(timeout=120)
    events: list[dict[str, Any]] = []
    gate = Gate("a lighthouse", ready=lambda: len(deltas_of(events)) >= PREEMPT_AFTER_TOKENS + 2)
    engine.checkpoint_hooks.append(gate)
    given_way = engine.preemptions
    try:
        line = submit(engine, "a lighthouse", LINE, events, max_tokens=30)
        assert gate.reached.wait(60)
        interactive = submit(engine, "the moon", 0, max_tokens=4)
        gate.opened.set()
        order = finishing_order({"line": line, "interactive": interactive})
    finally:
        engine.checkpoint_hooks.remove(gate)
    assert order == ["interactive", "line"]
    assert engine.preemptions == given_way + 1  # what the worker's beat reports, and /metrics counts
    assert line.result()["content"] == alone["content"]
    assert line.result()["usage"]["completion_tokens"] == alone["usage"]["completion_tokens"]
    assert "".join(event["content"] for event in deltas_of(events)) == alone["content"]


HALF_AN_EMOJI = 10813
"""A token of SmolLM2's vocabulary that is only the first bytes of an emoji: it decodes to no text on its own."""


def test_a_streamed_request_counts_as_shown_only_once_text_went_out(engine):
    """The session's hold waits for ``shown``: a first token that decodes to no text must not count, or a held
    stream would hold before its client has anything (and before its web sends the response's headers)."""
    streamed: list[dict[str, Any]] = []
    seen: dict[str, list[tuple[bool, int]]] = {"half": [], "whole": []}

    def watch(request_id: str, _cancelled: Any, shown: bool) -> None:
        if request_id in seen:
            seen[request_id].append((shown, len(deltas_of(streamed))))

    engine.checkpoint_hooks.append(watch)
    try:
        submit(engine, "half", 0, streamed, max_tokens=4, logit_bias={str(HALF_AN_EMOJI): 100}).result(timeout=120)
        submit(engine, "whole", 0, max_tokens=4, stream=False).result(timeout=120)
    finally:
        engine.checkpoint_hooks.remove(watch)
    assert seen["half"] and seen["half"][0] == (False, 0), "a first token of half a character shows nothing yet"
    assert all(shown == (deltas > 0) for shown, deltas in seen["half"])
    assert seen["whole"] and all(shown for shown, _ in seen["whole"]), "an answer not streamed is shown by a token"
