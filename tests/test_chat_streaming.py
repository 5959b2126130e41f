"""A user streams chat: SSE chunks exactly as OpenAI clients expect, the same text as without streaming."""

from __future__ import annotations

import json

import requests

from tests.conftest import CHAT_MODEL, ask

QUESTION = ask("Give me three facts about the Moon.")


def test_streamed_text_equals_the_non_streamed_text(client):
    plain = client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, temperature=0, max_tokens=24)
    chunks = list(
        client.chat.completions.create(
            model=CHAT_MODEL,
            messages=QUESTION,
            temperature=0,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    content_chunks = [c for c in chunks if c.choices]
    streamed = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert streamed == plain.choices[0].message.content
    assert len(content_chunks) > 3, "the answer should arrive in many chunks, not one"

    assert content_chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in content_chunks[1:])
    assert [c.choices[0].finish_reason for c in content_chunks[:-1]] == [None] * (len(content_chunks) - 1)
    assert content_chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason == "length"
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"

    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert [getattr(usage_chunk.usage, n) for n in counts] == [getattr(plain.usage, n) for n in counts]
    # the same prompt again: all of it but its last token comes from the prompt cache
    assert usage_chunk.usage.prompt_tokens_details.cached_tokens == plain.usage.prompt_tokens - 1
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_event_stream_ends_with_done(base_url):
    response = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": ask("Say hi."), "max_tokens": 4, "stream": True, "temperature": 0},
        stream=True,
        timeout=60,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    lines = [line for line in response.iter_lines(decode_unicode=True) if line]
    # SSE comments (clients ignore them) come while the worker sends nothing for half a second: a busy machine
    comments = [line for line in lines if line.startswith(":")]
    assert all(line == ": keep-alive" for line in comments)
    events = [line for line in lines if not line.startswith(":")]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    payloads = [json.loads(line[len("data: ") :]) for line in events[:-1]]
    assert payloads[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "usage" not in payloads[0], "usage appears only when stream_options.include_usage asks for it"


def test_stream_without_usage_option_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(
            model=CHAT_MODEL, messages=ask("Say hi."), max_tokens=3, stream=True, temperature=0
        )
    )
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason is not None
