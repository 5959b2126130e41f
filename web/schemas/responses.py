"""OpenAI Responses API bodies (``POST /v1/responses``) and their translation to the chat payload."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from web.schemas.chat import FUNCTION_NAME, ResponseFormatSchema
from web.schemas.fields import MODEL_ID, USER, OpenSchema

INPUT_ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text", "text")


class InputItems(fields.Field):
    """A string, or input items: messages (text parts only), ``function_call`` and ``function_call_output``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            if not value:
                raise ValidationError("Must not be empty.")
            return value
        if not isinstance(value, list) or not value:
            raise ValidationError("Must be a string or a non-empty array of input items.")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise ValidationError({index: ["Each item must be an object."]})
            kind = item.get("type", "message")
            if kind == "message":
                if item.get("role") not in INPUT_ROLES:
                    raise ValidationError({index: [f"role must be one of {', '.join(INPUT_ROLES)}."]})
                content = item.get("content")
                if isinstance(content, list):
                    for part in content:
                        if not isinstance(part, dict) or part.get("type") not in TEXT_PARTS:
                            kind_of = part.get("type") if isinstance(part, dict) else None
                            raise ValidationError({index: [f"Content parts of type {kind_of!r} are not supported."]})
                elif not isinstance(content, str):
                    raise ValidationError({index: ["content must be a string or an array of text parts."]})
            elif kind == "function_call":
                if not all(isinstance(item.get(k), str) for k in ("call_id", "name", "arguments")):
                    raise ValidationError({index: ["A function_call needs call_id, name and arguments."]})
            elif kind == "function_call_output":
                if not isinstance(item.get("call_id"), str) or not isinstance(item.get("output"), str):
                    raise ValidationError({index: ["A function_call_output needs call_id and output."]})
            elif kind != "reasoning":
                raise ValidationError({index: [f"Input items of type {kind!r} are not supported."]})
        return value


class FunctionToolSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal("function", error="Only function tools exist here."))
    name = fields.String(required=True, validate=FUNCTION_NAME)
    description = fields.String(allow_none=True)
    parameters = fields.Dict(load_default=lambda: {"type": "object", "properties": {}}, allow_none=True)
    strict = fields.Boolean(allow_none=True)


class ToolChoice(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value in ("none", "auto", "required"):
            return value
        if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
            return {"type": "function", "name": value["name"]}
        raise ValidationError('Must be "none", "auto", "required" or {"type": "function", "name": ...}.')


class TextFormatSchema(Schema):
    """``text.format``: as chat's ``response_format``, with the schema's fields at the top level."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.OneOf(("text", "json_object", "json_schema")))
    name = fields.String()
    schema = fields.Dict()
    strict = fields.Boolean(allow_none=True)


class TextSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    format = fields.Nested(TextFormatSchema)


class ResponsesRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    input = InputItems(required=True)
    instructions = fields.String(allow_none=True)
    previous_response_id = fields.String(allow_none=True)
    store = fields.Boolean(load_default=True, allow_none=True)
    stream = fields.Boolean(load_default=False, allow_none=True)
    tools = fields.List(fields.Nested(FunctionToolSchema), allow_none=True, validate=validate.Length(max=128))
    tool_choice = ToolChoice(allow_none=True)
    parallel_tool_calls = fields.Boolean(allow_none=True)
    max_output_tokens = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    temperature = fields.Float(allow_none=True, validate=validate.Range(min=0, max=2))
    top_p = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1, min_inclusive=False))
    text = fields.Nested(TextSchema, allow_none=True)
    reasoning = fields.Dict(allow_none=True)
    metadata = fields.Dict(allow_none=True)
    user = fields.String(allow_none=True, validate=USER)
    include = fields.List(fields.String(), allow_none=True)

    @validates_schema
    def _supported(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if (data.get("reasoning") or {}).get("effort"):
            raise ValidationError("This model does not reason; leave reasoning.effort unset.", "reasoning")
        choice = data.get("tool_choice")
        names = {tool["name"] for tool in data.get("tools") or []}
        if choice == "required" and not names:
            raise ValidationError("tool_choice 'required' needs tools.", "tool_choice")
        if isinstance(choice, dict) and choice["name"] not in names:
            raise ValidationError(f"tool_choice names {choice['name']!r}, which is not among the tools.", "tool_choice")
        text_format = ((data.get("text") or {}).get("format")) or {}
        if text_format.get("type") == "json_schema" and not text_format.get("name"):
            raise ValidationError("A json_schema format needs a name.", "text.format.name")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """This turn's input as chat messages; consecutive function calls join one assistant message."""
    items = body["input"]
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": _text(item["content"])})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
    return messages


def chat_options(body: dict[str, Any]) -> dict[str, Any]:
    """Tools, sampling and format of a Responses request as chat fields."""
    options: dict[str, Any] = {}
    if body.get("tools"):
        options["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool["name"],
                    "description": tool.get("description") or "",
                    "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
                },
            }
            for tool in body["tools"]
        ]
    choice = body.get("tool_choice")
    if choice is not None:
        options["tool_choice"] = (
            choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice["name"]}}
        )
    if body.get("parallel_tool_calls") is not None:
        options["parallel_tool_calls"] = body["parallel_tool_calls"]
    for source, target in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(source) is not None:
            options[target] = body[source]
    text_format = ((body.get("text") or {}).get("format")) or {}
    if text_format.get("type") in ("json_object", "json_schema"):
        response_format: dict[str, Any] = {"type": text_format["type"]}
        if text_format["type"] == "json_schema":
            response_format["json_schema"] = {
                "name": text_format["name"],
                "schema": text_format.get("schema") or {},
                "strict": text_format.get("strict"),
            }
        options["response_format"] = ResponseFormatSchema().load(response_format)
    return options


class ResponseObjectSchema(OpenSchema):
    """A Responses API ``response`` object (documentation of the view's answer)."""

    id = fields.String()
    object = fields.String()
    created_at = fields.Integer()
    status = fields.String()
    model = fields.String()
    output = fields.List(fields.Dict(), metadata={"description": "message and function_call items"})
    usage = fields.Dict(allow_none=True)
    incomplete_details = fields.Dict(allow_none=True)
    previous_response_id = fields.String(allow_none=True)
    request_id = fields.String()


class ResponseDeletedSchema(Schema):
    id = fields.String()
    object = fields.String()
    deleted = fields.Boolean()
