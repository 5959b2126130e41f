"""Chat generation with mlx-lm: chat template, sampling, stop sequences, streaming deltas, cancellation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_lm import load as load_lm
from mlx_lm import stream_generate
from mlx_lm.sample_utils import make_sampler

from config.errors import ApiError
from models.handlers.base import PROGRESS, Cancelled, Emit

DEFAULT_MAX_TOKENS = 512


def message_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string, or a list of ``{"type": "text"}`` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop sequence, so must wait."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StopScanner:
    """Cuts generated text at the first stop sequence and says how much is safe to stream so far."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.sent = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Adds ``delta``; returns the new text that may be sent now."""
        self.text += delta
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            self.stopped = True
            ready = len(self.text)
        else:
            ready = len(self.text) - held_back(self.text, self.stops)
        fresh = self.text[self.sent : ready]
        self.sent = max(self.sent, ready)
        return fresh

    def flush(self) -> str:
        fresh = self.text[self.sent :]
        self.sent = len(self.text)
        return fresh


class LanguageModelHandler:
    def __init__(self, model: Any, tokenizer: Any, context_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length

    def warmup(self) -> None:
        prompt = self.prompt_tokens([{"role": "user", "content": "Hello"}])
        for _ in stream_generate(self.model, self.tokenizer, prompt, max_tokens=2, sampler=make_sampler(0.0)):
            pass

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> list[int]:
        conversation = [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages]
        text = self.tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prefill(self, text: str, max_length: int) -> dict[str, Any]:
        """Runs ``text`` (at most ``max_length`` tokens) through the model without generating an answer."""
        prompt = self.tokenizer.encode(text or "Hello")[:max_length]
        for _ in stream_generate(self.model, self.tokenizer, prompt, max_tokens=1, sampler=make_sampler(0.0)):
            pass
        return {"prompt_tokens": len(prompt)}

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == "warmup":
            return self.prefill(payload.get("prompt", ""), payload.get("max_length") or self.context_length)
        if operation == "completion":
            prompt = self.tokenizer.encode(payload["prompt"])
        else:
            prompt = self.prompt_tokens(payload["messages"])
        max_tokens = payload.get("max_tokens") or DEFAULT_MAX_TOKENS
        if len(prompt) + max_tokens > self.context_length:
            raise ApiError(
                400,
                f"This model's context length is {self.context_length} tokens; the messages take {len(prompt)} "
                f"and max_tokens asks for {max_tokens}. Shorten the messages or lower max_tokens.",
                code="context_length_exceeded",
                param="prompt" if operation == "completion" else "messages",
            )
        if payload.get("seed") is not None:
            mx.random.seed(int(payload["seed"]))
        sampler = make_sampler(float(payload.get("temperature", 1.0)), top_p=float(payload.get("top_p", 1.0)))
        stream = bool(payload.get("stream"))
        scanner = StopScanner(payload.get("stop") or [])
        finish_reason = "length"
        completion_tokens = 0
        generation = stream_generate(
            self.model,
            self.tokenizer,
            prompt,
            max_tokens=max_tokens,
            sampler=sampler,
            prompt_progress_callback=lambda _done, _total: emit(PROGRESS),
        )
        for response in generation:
            fresh = scanner.feed(response.text)
            if stream and fresh:
                emit({"type": "delta", "content": fresh})
            if response.finish_reason is not None:
                # The last response of mlx-lm counts the end-of-sequence token too; OpenAI does not.
                completion_tokens = response.generation_tokens - (response.finish_reason == "stop")
                finish_reason = "stop" if scanner.stopped else response.finish_reason
                break
            completion_tokens = response.generation_tokens
            if scanner.stopped:
                finish_reason = "stop"
                break
            if cancelled():
                finish_reason = "cancelled"
                break
        rest = scanner.flush()
        if stream and rest:
            emit({"type": "delta", "content": rest})
        return {
            "content": scanner.text,
            "finish_reason": finish_reason,
            "usage": {
                "prompt_tokens": len(prompt),
                "completion_tokens": completion_tokens,
                "total_tokens": len(prompt) + completion_tokens,
            },
        }


def load(path: Path, context_length: int | None = None) -> LanguageModelHandler:
    model, tokenizer = load_lm(str(path))
    config = json.loads((path / "config.json").read_text())
    native = int(config.get("max_position_embeddings", 0)) or 4096
    return LanguageModelHandler(model, tokenizer, min(context_length or native, native))
