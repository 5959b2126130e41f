"""``POST /v1/chat/completions``: validate, hand to the model's worker, shape OpenAI's answer or stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import g
from flask.views import MethodView

from web.api import Blueprint, dispatcher
from web.schemas.chat import ChatCompletionRequestSchema, ChatCompletionSchema
from web.sse import sse_response

blp = Blueprint("chat", __name__, url_prefix="/v1", description="OpenAI chat completions")

_PAYLOAD_FIELDS = ("messages", "temperature", "top_p", "seed", "stop", "stream")


def worker_payload(body: dict[str, Any]) -> dict[str, Any]:
    """What the worker needs of a validated request."""
    payload = {name: body[name] for name in _PAYLOAD_FIELDS if body.get(name) is not None}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens:
        payload["max_tokens"] = max_tokens
    return payload


class ChatShape:
    """The ids and envelope fields shared by one completion and all its chunks."""

    def __init__(self, model: str, request_id: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.request_id = request_id

    def _envelope(self, obj: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "request_id": self.request_id,
        }

    def completion(self, result: dict[str, Any]) -> dict[str, Any]:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": result["content"]},
            "finish_reason": result["finish_reason"],
            "logprobs": None,
        }
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": result["usage"]}

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, include_usage: bool = False
    ) -> dict[str, Any]:
        chunk = {
            **self._envelope("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        if include_usage:
            chunk["usage"] = None
        return chunk

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk"), "choices": [], "usage": usage}


def stream_chunks(
    events: Iterator[dict[str, Any]], first: dict[str, Any], shape: ChatShape, include_usage: bool
) -> Iterator[dict[str, Any] | None]:
    try:
        yield shape.chunk({"role": "assistant", "content": ""}, include_usage=include_usage)
        event = first
        while True:
            if event["type"] == "idle":
                yield None
            elif event["type"] == "delta":
                yield shape.chunk({"content": event["content"]}, include_usage=include_usage)
            elif event["type"] == "done":
                result = event["result"]
                yield shape.chunk({}, finish_reason=result["finish_reason"], include_usage=include_usage)
                if include_usage:
                    yield shape.usage_chunk(result["usage"])
                return
            event = next(events)
    finally:
        events.close()


@blp.route("/chat/completions")
class ChatCompletions(MethodView):
    @blp.arguments(ChatCompletionRequestSchema)
    @blp.response(200, ChatCompletionSchema)
    def post(self, body: dict[str, Any]):
        shape = ChatShape(body["model"], g.request_id)
        streaming = bool(body.get("stream"))
        call = dispatcher().start(body["model"], "chat", worker_payload(body), g.request_id, streaming=streaming)
        if not streaming:
            return shape.completion(dispatcher().result(call))
        events = dispatcher().events(call)
        # Errors before the first token still get their HTTP status: nothing is sent until the first event.
        first = next(event for event in events if event["type"] != "idle")
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return sse_response(stream_chunks(events, first, shape, include_usage), g.request_id)
