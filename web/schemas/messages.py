"""Anthropic Messages API bodies (``POST /v1/messages``, ``/v1/messages/count_tokens``), and their translation
to the chat payload every language-model worker takes."""

from __future__ import annotations

import json
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from web.schemas.chat import FUNCTION_NAME
from web.schemas.fields import CONVERSATION, MODEL_ID, OpenSchema

BLOCK_TYPES = ("text", "tool_use", "tool_result")


class Blocks(fields.Field):
    """A string, or content blocks of the types this platform reads (text, tool_use, tool_result)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValidationError("Must be a string or an array of content blocks.")
        for index, block in enumerate(value):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind not in BLOCK_TYPES:
                raise ValidationError({index: [f"Content blocks of type {kind!r} are not supported by this model."]})
            if kind == "text" and not isinstance(block.get("text"), str):
                raise ValidationError({index: ["A text block needs a string 'text'."]})
            if kind == "tool_use" and not (isinstance(block.get("id"), str) and isinstance(block.get("name"), str)):
                raise ValidationError({index: ["A tool_use block needs an id and a name."]})
            if kind == "tool_result" and not isinstance(block.get("tool_use_id"), str):
                raise ValidationError({index: ["A tool_result block needs the tool_use_id it answers."]})
        return value


class SystemPrompt(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in value):
            return "\n\n".join(str(b.get("text", "")) for b in value)
        raise ValidationError("Must be a string or an array of text blocks.")


class MessageSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    role = fields.String(required=True, validate=validate.OneOf(("user", "assistant")))
    content = Blocks(required=True)


class ToolSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=FUNCTION_NAME)
    description = fields.String()
    input_schema = fields.Dict(load_default=lambda: {"type": "object", "properties": {}})
    type = fields.String(validate=validate.Equal("custom", error="Only custom (client) tools are supported."))


class ToolChoiceSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.OneOf(("auto", "any", "tool", "none")))
    name = fields.String()
    disable_parallel_tool_use = fields.Boolean(load_default=False)


class CountTokensSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    messages = fields.List(fields.Nested(MessageSchema), required=True, validate=CONVERSATION)
    system = SystemPrompt()
    tools = fields.List(fields.Nested(ToolSchema), validate=validate.Length(max=128))
    tool_choice = fields.Nested(ToolChoiceSchema)

    @validates_schema
    def _tool_choice(self, data: dict[str, Any], **_kwargs: Any) -> None:
        choice = data.get("tool_choice")
        if not choice:
            return
        names = {tool["name"] for tool in data.get("tools") or []}
        if choice["type"] in ("any", "tool") and not names:
            raise ValidationError(f"tool_choice {choice['type']!r} needs tools.", "tool_choice")
        if choice["type"] == "tool" and choice.get("name") not in names:
            raise ValidationError(
                f"tool_choice names {choice.get('name')!r}, which is not among the tools.", "tool_choice"
            )


class MessagesRequestSchema(CountTokensSchema):
    max_tokens = fields.Integer(required=True, validate=validate.Range(min=1))
    stop_sequences = fields.List(fields.String(validate=validate.Length(min=1)), validate=validate.Length(max=4))
    temperature = fields.Float(validate=validate.Range(min=0, max=1))
    top_p = fields.Float(validate=validate.Range(min=0, max=1, min_inclusive=False))
    top_k = fields.Integer(validate=validate.Range(min=0))
    stream = fields.Boolean(load_default=False)
    metadata = fields.Dict()
    thinking = fields.Dict()

    @validates_schema
    def _no_thinking(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if (data.get("thinking") or {}).get("type") == "enabled":
            raise ValidationError("Extended thinking is not available for this model.", "thinking")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content or [] if block.get("type") == "text")


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation as OpenAI chat messages: tool_use blocks become assistant tool calls, tool_result blocks
    tool messages."""
    messages: list[dict[str, Any]] = []
    if body.get("system"):
        messages.append({"role": "system", "content": body["system"]})
    for message in body["messages"]:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if message["role"] == "assistant":
            calls = [
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})},
                }
                for block in blocks
                if block["type"] == "tool_use"
            ]
            entry: dict[str, Any] = {"role": "assistant", "content": _text(blocks) or (None if calls else "")}
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
            continue
        for block in blocks:
            if block["type"] == "tool_result":
                result = _text(block.get("content")) if block.get("content") is not None else ""
                if block.get("is_error"):
                    result = f"Error: {result}"
                messages.append({"role": "tool", "tool_call_id": block["tool_use_id"], "content": result})
        text = _text(blocks)
        if text or not any(block["type"] == "tool_result" for block in blocks):
            messages.append({"role": "user", "content": text})
    return messages


def chat_tools(body: dict[str, Any]) -> dict[str, Any]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` in OpenAI's terms."""
    tools = body.get("tools") or []
    if not tools:
        return {}
    converted: dict[str, Any] = {
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "parameters": tool["input_schema"],
                },
            }
            for tool in tools
        ]
    }
    choice = body.get("tool_choice")
    if choice:
        converted["tool_choice"] = {
            "auto": "auto",
            "any": "required",
            "none": "none",
            "tool": {"type": "function", "function": {"name": choice.get("name")}},
        }[choice["type"]]
        converted["parallel_tool_calls"] = not choice["disable_parallel_tool_use"]
    return converted


def chat_payload(body: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = {"messages": chat_messages(body), **chat_tools(body)}
    for name, target in (
        ("max_tokens", "max_tokens"),
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stop_sequences", "stop"),
    ):
        if body.get(name) is not None:
            payload[target] = body[name]
    return payload


class MessageUsageSchema(OpenSchema):
    input_tokens = fields.Integer()
    output_tokens = fields.Integer()
    cache_read_input_tokens = fields.Integer()
    cache_creation_input_tokens = fields.Integer()


class MessageResponseSchema(OpenSchema):
    """Anthropic's ``message`` object (documentation of the view's answer)."""

    id = fields.String()
    type = fields.String()
    role = fields.String()
    model = fields.String()
    content = fields.List(fields.Dict(), metadata={"description": "text, thinking and tool_use blocks"})
    stop_reason = fields.String(allow_none=True)
    stop_sequence = fields.String(allow_none=True)
    usage = fields.Nested(MessageUsageSchema)
    request_id = fields.String()


class CountTokensResponseSchema(Schema):
    input_tokens = fields.Integer(required=True)
