"""The Anthropic Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``) on the same queues and
workers as chat completions: the request becomes a chat payload, the answer becomes content blocks."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from flask import g
from flask.views import MethodView

from config.errors import ApiError
from config.model_types import COUNT_TOKENS
from web.api import Blueprint, dispatcher, opened
from web.schemas.messages import (
    CountTokensResponseSchema,
    CountTokensSchema,
    MessageResponseSchema,
    MessagesRequestSchema,
    chat_payload,
)
from web.schemas.operations import STREAMED
from web.sse import sse_response

blp = Blueprint("messages", __name__, url_prefix="/v1", description="Anthropic Messages API")

STOP_REASONS = {"length": "max_tokens", "tool_calls": "tool_use", "cancelled": "end_turn"}


def stop_reason(choice: dict[str, Any]) -> str:
    if choice["finish_reason"] == "stop":
        return "stop_sequence" if choice.get("stop_sequence") else "end_turn"
    return STOP_REASONS.get(choice["finish_reason"], "end_turn")


def tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": "toolu_" + call["id"].removeprefix("call_"),
        "name": call["function"]["name"],
        "input": json.loads(call["function"]["arguments"] or "{}"),
    }


def usage_of(result: dict[str, Any]) -> dict[str, Any]:
    usage = result["usage"]
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    return {
        "input_tokens": usage["prompt_tokens"] - cached,
        "output_tokens": usage["completion_tokens"],
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def error_event(error: ApiError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error.error_type, "message": error.message}}


class MessageShape:
    def __init__(self, model: str) -> None:
        self.id = f"msg_{uuid.uuid4().hex[:24]}"
        self.model = model
        self.request_id = g.request_id

    def message(self, content: list[dict[str, Any]], stop: str | None, stop_sequence: str | None, usage: dict):
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop,
            "stop_sequence": stop_sequence,
            "usage": usage,
            "request_id": self.request_id,
        }

    def whole(self, result: dict[str, Any]) -> dict[str, Any]:
        choice = result["choices"][0]
        content = [{"type": "text", "text": choice["content"]}] if choice["content"] else []
        content += [tool_use_block(call) for call in choice.get("tool_calls") or []]
        return self.message(content, stop_reason(choice), choice.get("stop_sequence"), usage_of(result))


def stream_events(events: Iterator[dict[str, Any]], first: dict[str, Any], shape: MessageShape):
    """Anthropic's events: message_start, a content block per text run and per tool call (start, deltas,
    stop), message_delta with the stop reason and usage, message_stop."""
    try:
        empty = {"input_tokens": 0, "output_tokens": 0}
        yield {"type": "message_start", "message": shape.message([], None, None, empty)}
        index, text_open = 0, False
        event = first
        while True:
            if event["type"] == "idle":
                yield {"type": "ping"}
            elif event["type"] == "delta":
                if event["content"]:
                    if not text_open:
                        yield {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "text", "text": ""},
                        }
                        text_open = True
                    yield {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": event["content"]},
                    }
                for call in event.get("tool_calls") or []:
                    if text_open:
                        yield {"type": "content_block_stop", "index": index}
                        index, text_open = index + 1, False
                    block = tool_use_block(call)
                    yield {"type": "content_block_start", "index": index, "content_block": {**block, "input": {}}}
                    yield {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": call["function"]["arguments"]},
                    }
                    yield {"type": "content_block_stop", "index": index}
                    index += 1
            elif event["type"] == "done":
                if text_open:
                    yield {"type": "content_block_stop", "index": index}
                choice = event["result"]["choices"][0]
                yield {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason(choice), "stop_sequence": choice.get("stop_sequence")},
                    "usage": usage_of(event["result"]),
                }
                yield {"type": "message_stop"}
                return
            event = next(events)
    finally:
        events.close()


@blp.route("/messages")
class Messages(MethodView):
    @blp.arguments(MessagesRequestSchema)
    @blp.alt_response(200, schema=MessageResponseSchema, description="The message (a stream of events with stream)")
    @blp.doc(**STREAMED)
    def post(self, body: dict[str, Any]):
        shape = MessageShape(body["model"])
        payload = chat_payload(body)
        streaming = body["stream"]
        call = dispatcher().start(body["model"], "chat", {**payload, "stream": streaming}, g.request_id, streaming)
        if not streaming:
            return shape.whole(dispatcher().result(call))
        events, first = opened(call)
        return sse_response(stream_events(events, first, shape), g.request_id, named=True, error_event=error_event)


@blp.route("/messages/count_tokens")
class CountTokens(MethodView):
    @blp.arguments(CountTokensSchema)
    @blp.alt_response(200, schema=CountTokensResponseSchema, description="The prompt's token count")
    def post(self, body: dict[str, Any]):
        call = dispatcher().start(body["model"], COUNT_TOKENS, chat_payload(body), g.request_id)
        return {"input_tokens": dispatcher().result(call)["input_tokens"]}
