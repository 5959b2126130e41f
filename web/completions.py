"""``POST /v1/completions``: text in, text out; each prompt of a list is its own request, all sent at once so
that the worker batches them."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import g
from flask.views import MethodView

from web.api import Blueprint, dispatcher, opened
from web.schemas.chat import generation_payload
from web.schemas.completions import CompletionRequestSchema, CompletionSchema
from web.schemas.operations import STREAMED
from web.sse import sse_response

blp = Blueprint("completions", __name__, url_prefix="/v1", description="OpenAI (legacy) completions")


def legacy_logprobs(entries: list[dict[str, Any]] | None, start: int) -> dict[str, Any] | None:
    """Chat-style logprob entries in the completions shape (tokens, token_logprobs, top_logprobs, text_offset)."""
    if entries is None:
        return None
    offsets, position = [], start
    for entry in entries:
        offsets.append(position)
        position += len(entry["token"])
    return {
        "tokens": [entry["token"] for entry in entries],
        "token_logprobs": [entry["logprob"] for entry in entries],
        "top_logprobs": [{top["token"]: top["logprob"] for top in entry["top_logprobs"]} for entry in entries],
        "text_offset": offsets,
    }


class CompletionShape:
    def __init__(self, model: str, request_id: str, n: int, echo: bool, prompts: list[str]) -> None:
        self.id = f"cmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.request_id = request_id
        self.n = n
        self.echo = echo
        self.prompts = prompts

    def envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "request_id": self.request_id,
        }

    def choice(self, prompt_index: int, choice: dict[str, Any]) -> dict[str, Any]:
        prefix = self.prompts[prompt_index] if self.echo else ""
        logprobs = (choice.get("logprobs") or {}).get("content")
        return {
            "text": prefix + choice["content"],
            "index": prompt_index * self.n + choice["index"],
            "logprobs": legacy_logprobs(logprobs, len(prefix)),
            "finish_reason": choice["finish_reason"],
        }

    def completion(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        choices = [self.choice(i, choice) for i, result in enumerate(results) for choice in result["choices"]]
        usage = {
            name: sum(result["usage"][name] for result in results)
            for name in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
        return {**self.envelope(), "choices": choices, "usage": usage}

    def chunk(self, index: int, text: str, finish_reason: str | None = None, logprobs: Any = None) -> dict[str, Any]:
        return {
            **self.envelope(),
            "choices": [{"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}],
        }


def stream_chunks(
    streams: list[Iterator[dict[str, Any]]], shape: CompletionShape, include_usage: bool
) -> Iterator[dict[str, Any] | None]:
    """Each prompt's chunks in turn (all prompts generate at once; later ones wait in their reply streams)."""
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    try:
        for prompt_index, events in enumerate(streams):
            offsets = [0] * shape.n
            if shape.echo:
                for j in range(shape.n):
                    yield shape.chunk(prompt_index * shape.n + j, shape.prompts[prompt_index])
            for event in events:
                if event["type"] == "idle":
                    yield None
                elif event["type"] == "delta":
                    j = event.get("index", 0)
                    logprobs = legacy_logprobs(event.get("logprobs"), offsets[j]) if event.get("logprobs") else None
                    offsets[j] += len(event["content"])
                    yield shape.chunk(prompt_index * shape.n + j, event["content"], logprobs=logprobs)
                elif event["type"] == "done":
                    for choice in event["result"]["choices"]:
                        yield shape.chunk(prompt_index * shape.n + choice["index"], "", choice["finish_reason"])
                    for name in usage:
                        usage[name] += event["result"]["usage"][name]
        if include_usage:
            yield {**shape.envelope(), "choices": [], "usage": usage}
    finally:
        for events in streams:
            close = getattr(events, "close", None)
            if close is not None:
                close()


@blp.route("/completions")
class Completions(MethodView):
    @blp.arguments(CompletionRequestSchema)
    @blp.response(200, CompletionSchema)
    @blp.doc(**STREAMED)
    def post(self, body: dict[str, Any]):
        prompts = body["prompt"]
        logprobs = body.get("logprobs")
        payload = generation_payload({**body, "logprobs": logprobs is not None, "top_logprobs": logprobs or 0})
        streaming = bool(body.get("stream"))
        shape = CompletionShape(body["model"], g.request_id, body.get("n") or 1, body["echo"], prompts)
        calls = []
        try:
            for prompt in prompts:
                request = {**payload, "prompt": prompt}
                calls.append(dispatcher().start(body["model"], "completion", request, g.request_id, streaming))
        except Exception:
            for call in calls:
                dispatcher().abandon(call)
            raise
        if not streaming:
            return shape.completion([dispatcher().result(call) for call in calls])
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        events, first = opened(calls[0])
        streams = [itertools.chain([first], events), *(dispatcher().events(call) for call in calls[1:])]
        return sse_response(_closing(stream_chunks(streams, shape, include_usage), calls), g.request_id)


def _closing(chunks: Iterator[dict[str, Any] | None], calls: list) -> Iterator[dict[str, Any] | None]:
    """``chunks``, abandoning every call still running when the client goes away."""
    try:
        yield from chunks
    finally:
        for call in calls:
            if not call.finished:
                dispatcher().abandon(call)
