"""The OpenAI Responses API (``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``) on the same
queues and workers as chat completions. A stored response keeps its whole conversation, so that
``previous_response_id`` continues it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from flask import g
from flask.views import MethodView

from config.errors import ApiError
from tasks import response_store
from web.api import Blueprint, dispatcher, opened
from web.identity import current_caller
from web.schemas.operations import STREAMED
from web.schemas.responses import (
    ResponseDeletedSchema,
    ResponseObjectSchema,
    ResponsesRequestSchema,
    chat_options,
    input_messages,
)
from web.sse import sse_response

blp = Blueprint("responses", __name__, url_prefix="/v1", description="OpenAI Responses API")


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseShape:
    """One response: its envelope, its output items, and the events that stream them."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.id = _id("resp")
        self.created_at = int(time.time())
        self.sequence = 0
        self.message_id = _id("msg")
        self.request_id = g.request_id

    def envelope(self, status: str, output: list[dict[str, Any]], usage: dict | None, incomplete: str | None):
        body = self.body
        text_format = ((body.get("text") or {}).get("format")) or {"type": "text"}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": body["model"],
            "output": output,
            "usage": usage,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "error": None,
            "instructions": body.get("instructions"),
            "previous_response_id": body.get("previous_response_id"),
            "tools": body.get("tools") or [],
            "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "max_output_tokens": body.get("max_output_tokens"),
            "text": {"format": text_format},
            "store": body.get("store") is not False,
            "metadata": body.get("metadata") or {},
            "request_id": self.request_id,
        }

    def message_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        return {
            "type": "message",
            "id": self.message_id,
            "status": status,
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if text else [],
        }

    @staticmethod
    def call_item(call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
        return {
            "type": "function_call",
            "id": "fc_" + call["id"].removeprefix("call_"),
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
            "status": status,
        }

    def output(self, choice: dict[str, Any]) -> list[dict[str, Any]]:
        items = [self.message_item(choice["content"])] if choice["content"] else []
        return items + [self.call_item(call) for call in choice.get("tool_calls") or []]

    def final(self, result: dict[str, Any]) -> dict[str, Any]:
        choice = result["choices"][0]
        incomplete = "max_output_tokens" if choice["finish_reason"] == "length" else None
        return self.envelope(
            "incomplete" if incomplete else "completed", self.output(choice), usage_of(result), incomplete
        )

    def event(self, kind: str, **fields: Any) -> dict[str, Any]:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}


def usage_of(result: dict[str, Any]) -> dict[str, Any]:
    usage = result["usage"]
    return {
        "input_tokens": usage["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)},
        "output_tokens": usage["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage["total_tokens"],
    }


def assistant_turn(choice: dict[str, Any]) -> dict[str, Any]:
    """The response's output as the chat message a later turn replays."""
    message: dict[str, Any] = {"role": "assistant", "content": choice["content"]}
    if choice.get("tool_calls"):
        message["tool_calls"] = [{k: v for k, v in call.items() if k != "index"} for call in choice["tool_calls"]]
    return message


def conversation_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Earlier turns (from ``previous_response_id``), this turn's instructions, then its input."""
    earlier: list[dict[str, Any]] = []
    if body.get("previous_response_id"):
        stored = response_store.get(body["previous_response_id"], current_caller().sees)
        if stored is None:
            raise ApiError(
                404,
                f"Response '{body['previous_response_id']}' not found (it was not stored, or was deleted)",
                code="response_not_found",
                param="previous_response_id",
            )
        earlier = [message for message in stored.conversation if message["role"] != "system"]
    instructions = [{"role": "system", "content": body["instructions"]}] if body.get("instructions") else []
    return instructions + earlier + input_messages(body)


def stream_events(
    events: Iterator[dict[str, Any]], first: dict[str, Any], shape: ResponseShape, finish: Any
) -> Iterator[dict[str, Any] | None]:
    """The Responses API's events: created, in_progress, an output item per message and per function call
    (added, its deltas, done), then completed (or incomplete)."""
    try:
        yield shape.event("response.created", response=shape.envelope("in_progress", [], None, None))
        yield shape.event("response.in_progress", response=shape.envelope("in_progress", [], None, None))
        text, text_index, outputs = "", None, 0
        event = first
        while True:
            if event["type"] == "idle":
                yield None
            elif event["type"] == "delta":
                if event["content"]:
                    if text_index is None:
                        text_index, outputs = outputs, outputs + 1
                        yield shape.event(
                            "response.output_item.added",
                            output_index=text_index,
                            item=shape.message_item("", "in_progress"),
                        )
                        yield shape.event(
                            "response.content_part.added",
                            item_id=shape.message_id,
                            output_index=text_index,
                            content_index=0,
                            part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
                        )
                    text += event["content"]
                    yield shape.event(
                        "response.output_text.delta",
                        item_id=shape.message_id,
                        output_index=text_index,
                        content_index=0,
                        delta=event["content"],
                        logprobs=[],
                    )
                for call in event.get("tool_calls") or []:
                    item = shape.call_item(call)
                    index, outputs = outputs, outputs + 1
                    yield shape.event(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "arguments": "", "status": "in_progress"},
                    )
                    yield shape.event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=item["arguments"],
                    )
                    yield shape.event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=item["arguments"],
                    )
                    yield shape.event("response.output_item.done", output_index=index, item=item)
            elif event["type"] == "done":
                if text_index is not None:
                    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                    yield shape.event(
                        "response.output_text.done",
                        item_id=shape.message_id,
                        output_index=text_index,
                        content_index=0,
                        text=text,
                        logprobs=[],
                    )
                    yield shape.event(
                        "response.content_part.done",
                        item_id=shape.message_id,
                        output_index=text_index,
                        content_index=0,
                        part=part,
                    )
                    yield shape.event(
                        "response.output_item.done", output_index=text_index, item=shape.message_item(text)
                    )
                response = finish(event["result"])
                kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
                yield shape.event(kind, response=response)
                return
            event = next(events)
    finally:
        events.close()


@blp.route("/responses")
class Responses(MethodView):
    @blp.arguments(ResponsesRequestSchema)
    @blp.alt_response(200, schema=ResponseObjectSchema, description="The response (a stream of events with stream)")
    @blp.doc(**STREAMED)
    def post(self, body: dict[str, Any]):
        shape = ResponseShape(body)
        owner = current_caller().owner  # the stream may finish outside this request's context
        conversation = conversation_of(body)
        streaming = bool(body.get("stream"))
        payload = {"messages": conversation, **chat_options(body), "stream": streaming}
        call = dispatcher().start(body["model"], "chat", payload, g.request_id, streaming)

        def finish(result: dict[str, Any]) -> dict[str, Any]:
            response = shape.final(result)
            if body.get("store") is not False:
                turn = [*conversation, assistant_turn(result["choices"][0])]
                response_store.save(shape.id, body["model"], turn, response, owner)
            return response

        if not streaming:
            return finish(dispatcher().result(call))
        events, first = opened(call)
        return sse_response(stream_events(events, first, shape, finish), g.request_id, named=True)


@blp.route("/responses/<string:response_id>")
class StoredResponse(MethodView):
    @blp.alt_response(200, schema=ResponseObjectSchema, description="A stored response")
    def get(self, response_id: str):
        stored = response_store.get(response_id, current_caller().sees)
        if stored is None:
            raise _not_found(response_id)
        return stored.response

    @blp.alt_response(200, schema=ResponseDeletedSchema, description="The stored response is deleted")
    def delete(self, response_id: str):
        if not response_store.delete(response_id, current_caller().sees):
            raise _not_found(response_id)
        return {"id": response_id, "object": "response.deleted", "deleted": True}


def _not_found(response_id: str) -> ApiError:
    return ApiError(404, f"Response '{response_id}' not found", code="response_not_found", param="response_id")
