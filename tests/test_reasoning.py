"""Reasoning: ``reasoning_content`` apart from ``content``, streamed as its own deltas; ``chat_template_kwargs``
and ``reasoning_effort`` reaching the chat template; structured output constraining only the answer after the
thinking. No thinking model can be installed here, so a copy of SmolLM2 is made to think
(``tests/thinking_model.py``: two unused special tokens renamed ``<think>``/``</think>``, a template that opens
the block); its real weights never learned to close it, so ``logit_bias`` closes it when a test needs that."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR, ask, load_model, unload_model
from tests.thinking_model import END_THINK, make_thinking_model

THINKER = "test/thinking-smol"
QUESTION = ask("What is 2 + 2?")
ANSWER = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}


@pytest.fixture(scope="module")
def thinker(stack, base_url) -> Iterator[str]:
    folder = make_thinking_model(CHAT_MODEL_DIR, stack.workdir / "thinking-smol")
    loaded = load_model(base_url, str(folder), THINKER, context_length=2048)
    assert loaded.status_code == 200, loaded.text
    yield THINKER
    unload_model(base_url, THINKER, force=True)


def test_a_block_the_template_opened_is_reasoning_not_content(client, thinker):
    answer = client.chat.completions.create(model=thinker, messages=QUESTION, max_tokens=12, temperature=0)
    message = answer.choices[0].message
    assert message.model_extra["reasoning_content"] and not message.content


def test_without_thinking_the_answer_is_content(client, thinker):
    answer = client.chat.completions.create(
        model=thinker,
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}},
    )
    message = answer.choices[0].message
    assert message.content and "reasoning_content" not in (message.model_extra or {})


def test_reasoning_streams_as_its_own_deltas(client, thinker):
    whole = client.chat.completions.create(model=thinker, messages=QUESTION, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model=thinker, messages=QUESTION, max_tokens=12, temperature=0, stream=True)
    reasoning, content = "", ""
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            reasoning += (delta.model_extra or {}).get("reasoning_content") or ""
            content += delta.content or ""
    assert reasoning == whole.choices[0].message.model_extra["reasoning_content"] and content == ""


def test_structured_output_applies_after_the_thinking(client, thinker):
    """``</think>`` (pushed by a bias) comes first, which JSON would not allow: the grammar waited for it."""
    answer = client.chat.completions.create(
        model=thinker,
        messages=QUESTION,
        max_tokens=30,
        temperature=0,
        logprobs=True,
        logit_bias={str(END_THINK): 10},
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": {**ANSWER, "additionalProperties": False}},
        },
    )
    choice = answer.choices[0]
    assert choice.logprobs.content[0].token == "</think>"
    assert isinstance(json.loads(choice.message.content)["answer"], int)


def test_a_constrained_answer_cannot_end_inside_its_thinking(client, thinker):
    """Unconstrained, the model ends while still thinking; with a format to follow, it may not end there."""
    free = client.chat.completions.create(
        model=thinker, messages=QUESTION, max_tokens=40, temperature=0, logit_bias={str(END_THINK): 4}
    )
    assert free.choices[0].finish_reason == "stop" and not free.choices[0].message.content
    constrained = client.chat.completions.create(
        model=thinker,
        messages=QUESTION,
        max_tokens=40,
        temperature=0,
        logit_bias={str(END_THINK): 4},
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER}},
    )
    assert constrained.choices[0].finish_reason == "length"


def test_reasoning_effort_reaches_a_template_that_reads_it(client, thinker, base_url):
    plain = client.chat.completions.create(model=thinker, messages=QUESTION, max_tokens=1)
    effort = client.chat.completions.create(model=thinker, messages=QUESTION, max_tokens=1, reasoning_effort="low")
    assert effort.usage.prompt_tokens > plain.usage.prompt_tokens  # the template wrote "Effort: low"
    refused = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": QUESTION, "max_tokens": 1, "reasoning_effort": "low"},
        timeout=60,
    )
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "reasoning_effort"
    unknown = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": thinker, "messages": QUESTION, "max_tokens": 1, "chat_template_kwargs": {"colour": "red"}},
        timeout=60,
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "chat_template_kwargs.colour"
