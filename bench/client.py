"""One chat request through an OpenAI-compatible server with the official ``openai`` client, timed."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import openai
from tokenizers import Tokenizer

from bench.defaults import CHAT_MODEL_DIR


@dataclass
class RequestTiming:
    """What a client saw of one request; times in seconds from sending it."""

    ok: bool
    started: float
    total_s: float
    tokens: int = 0
    ttft_s: float | None = None
    first_to_last_s: float | None = None
    token_source: str = ""
    error: str | None = None
    text: str = ""
    cached_tokens: int | None = None
    """``usage.prompt_tokens_details.cached_tokens`` when the server reports it."""

    @property
    def decode_tps(self) -> float | None:
        """Generated tokens/s between the first and the last text chunk (the time to first token left out)."""
        if not self.first_to_last_s or self.tokens < 2:
            return None
        return (self.tokens - 1) / self.first_to_last_s


class TokenCounter:
    """Counts a text's tokens with the chat model's tokenizer, for servers that do not report usage."""

    @cached_property
    def _tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(str(CHAT_MODEL_DIR / "tokenizer.json"))

    def count(self, text: str) -> int:
        """Tokens of ``text`` without special tokens."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


def _request_id_header(request_id: str | None) -> dict[str, str]:
    return {"X-Request-ID": request_id} if request_id else {}


def make_client(base_url: str, timeout: float = 900) -> openai.OpenAI:
    """An OpenAI client for ``base_url`` (without ``/v1``), no retries: an error is counted, not hidden."""
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0, timeout=timeout)


def stream_chat(
    client: openai.OpenAI,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    counter: TokenCounter,
    include_usage: bool = True,
    request_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RequestTiming:
    """A greedy streamed completion: time to the first text chunk, to the last, and generated tokens; ``extra``
    goes into the request as it is (e.g. ``tools``)."""
    started = time.perf_counter()
    chunks: list[float] = []
    text, usage = "", None
    try:
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            stream=True,
            extra_headers=_request_id_header(request_id),
            **({"stream_options": {"include_usage": True}} if include_usage else {}),
            **(extra or {}),
        )
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.choices and chunk.choices[0].delta.content:
                chunks.append(time.perf_counter())
                text += chunk.choices[0].delta.content
    except openai.OpenAIError as exc:
        return RequestTiming(False, started, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    total = time.perf_counter() - started
    if not chunks:
        return RequestTiming(False, started, total, error="the stream carried no text")
    tokens, source = (usage.completion_tokens, "usage") if usage else (counter.count(text), "retokenized")
    details = getattr(usage, "prompt_tokens_details", None) if usage else None
    return RequestTiming(
        True,
        started,
        total,
        tokens=tokens,
        ttft_s=chunks[0] - started,
        first_to_last_s=chunks[-1] - chunks[0],
        token_source=source,
        text=text,
        cached_tokens=getattr(details, "cached_tokens", None),
    )


def complete_chat(
    client: openai.OpenAI,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    request_id: str | None = None,
) -> RequestTiming:
    """A greedy non-streamed completion: total time and generated tokens as the server reports them."""
    started = time.perf_counter()
    try:
        answer = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            temperature=0.0,
            extra_headers=_request_id_header(request_id),
        )
    except openai.OpenAIError as exc:
        return RequestTiming(False, started, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
    total = time.perf_counter() - started
    return RequestTiming(
        True,
        started,
        total,
        tokens=answer.usage.completion_tokens if answer.usage else 0,
        token_source="usage",
        text=answer.choices[0].message.content or "",
    )
