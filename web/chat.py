"""``POST /v1/chat/completions``: validate, hand to the model's worker, shape OpenAI's answer or stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import current_app, g
from flask.views import MethodView

from config.errors import ApiError
from tasks.image_inputs import has_images, with_images
from web.api import Blueprint, dispatcher, opened
from web.schemas.chat import ChatCompletionRequestSchema, ChatCompletionSchema, generation_payload
from web.schemas.operations import STREAMED
from web.sse import sse_response

blp = Blueprint("chat", __name__, url_prefix="/v1", description="OpenAI chat completions")


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
        choices = [
            {
                "index": choice["index"],
                "message": assistant_message(choice),
                "finish_reason": choice["finish_reason"],
                "logprobs": choice.get("logprobs"),
            }
            for choice in result["choices"]
        ]
        return {**self._envelope("chat.completion"), "choices": choices, "usage": result["usage"]}

    def chunk(
        self,
        delta: dict[str, Any],
        finish_reason: str | None = None,
        include_usage: bool = False,
        index: int = 0,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        choice = {
            "index": index,
            "delta": delta,
            "finish_reason": finish_reason,
            "logprobs": {"content": logprobs} if logprobs is not None else None,
        }
        chunk = {**self._envelope("chat.completion.chunk"), "choices": [choice]}
        if include_usage:
            chunk["usage"] = None
        return chunk

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self._envelope("chat.completion.chunk"), "choices": [], "usage": usage}


def assistant_message(choice: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice["content"]}
    if choice.get("reasoning_content"):
        message["reasoning_content"] = choice["reasoning_content"]
    if choice.get("tool_calls"):
        message["tool_calls"] = [{k: v for k, v in call.items() if k != "index"} for call in choice["tool_calls"]]
    return message


def tool_call_pieces(calls: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each call as OpenAI streams it: a first piece with index, id, type and name, then the argument text."""
    for call in calls:
        function = call["function"]
        yield {
            "index": call["index"],
            "id": call["id"],
            "type": "function",
            "function": {"name": function["name"], "arguments": ""},
        }
        yield {"index": call["index"], "function": {"arguments": function["arguments"]}}


def stream_chunks(
    events: Iterator[dict[str, Any]], first: dict[str, Any], shape: ChatShape, include_usage: bool, choices: int
) -> Iterator[dict[str, Any] | None]:
    """OpenAI's chunks: a role chunk per choice, then each choice's deltas, then each one's finish reason."""
    try:
        for index in range(choices):
            yield shape.chunk({"role": "assistant", "content": ""}, include_usage=include_usage, index=index)
        event = first
        while True:
            if event["type"] == "idle":
                yield None
            elif event["type"] == "delta":
                index = event.get("index", 0)
                if event.get("reasoning"):
                    yield shape.chunk(
                        {"reasoning_content": event["reasoning"]}, include_usage=include_usage, index=index
                    )
                if event["content"] or event.get("logprobs"):
                    yield shape.chunk(
                        {"content": event["content"]},
                        include_usage=include_usage,
                        index=index,
                        logprobs=event.get("logprobs"),
                    )
                for piece in tool_call_pieces(event.get("tool_calls") or []):
                    yield shape.chunk({"tool_calls": [piece]}, include_usage=include_usage, index=index)
            elif event["type"] == "done":
                result = event["result"]
                for choice in result["choices"]:
                    yield shape.chunk(
                        {}, finish_reason=choice["finish_reason"], include_usage=include_usage, index=choice["index"]
                    )
                if include_usage:
                    yield shape.usage_chunk(result["usage"])
                return
            event = next(events)
    finally:
        events.close()


def images_for(model: str, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with their images fetched, for a vision model; 400 for a model that cannot see."""
    dispatcher().require_model(model, "chat")
    model_type = dispatcher().model_type(model)
    if model_type != "multimodal":
        raise ApiError(
            400,
            f"Model '{model}' is a {model_type} model and does not take images; use a multimodal model",
            code="unsupported_content",
            param="messages",
        )
    return with_images(messages, current_app.extensions["settings"])


@blp.route("/chat/completions")
class ChatCompletions(MethodView):
    @blp.arguments(ChatCompletionRequestSchema)
    @blp.response(200, ChatCompletionSchema)
    @blp.doc(**STREAMED)
    def post(self, body: dict[str, Any]):
        shape = ChatShape(body["model"], g.request_id)
        streaming = bool(body.get("stream"))
        payload = generation_payload(body)
        if has_images(body["messages"]):
            payload["messages"] = images_for(body["model"], body["messages"])
        call = dispatcher().start(body["model"], "chat", payload, g.request_id, streaming=streaming)
        if not streaming:
            return shape.completion(dispatcher().result(call))
        events, first = opened(call)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = stream_chunks(events, first, shape, include_usage, body.get("n") or 1)
        return sse_response(chunks, g.request_id)
