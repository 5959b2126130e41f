"""Chat completion request and response bodies (OpenAI's shapes, plus ``request_id``)."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from web.schemas.fields import CONVERSATION, MODEL_ID, USER, MessageContent, StringOrStringList

MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20

ROLES = ("system", "developer", "user", "assistant", "tool")


FUNCTION_NAME = validate.Regexp(r"^[A-Za-z0-9_.-]{1,64}$", error="Must be 1-64 letters, digits, '_', '.' or '-'.")


class CalledFunctionSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=FUNCTION_NAME)
    arguments = fields.String(load_default="{}")


class ToolCallSchema(Schema):
    """A call an assistant made in an earlier turn."""

    class Meta:
        unknown = EXCLUDE

    id = fields.String(required=True)
    type = fields.String(load_default="function", validate=validate.Equal("function"))
    function = fields.Nested(CalledFunctionSchema, required=True)


class ChatMessageSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = MessageContent(load_default=None, allow_none=True)
    name = fields.String()
    tool_calls = fields.List(fields.Nested(ToolCallSchema), validate=validate.Length(min=1))
    tool_call_id = fields.String()

    @validates_schema
    def _roles(self, data, **_kwargs) -> None:
        if data["role"] == "tool" and not data.get("tool_call_id"):
            raise ValidationError("A tool message needs the tool_call_id it answers.", field_name="tool_call_id")
        if data.get("tool_calls") and data["role"] != "assistant":
            raise ValidationError("Only assistant messages carry tool_calls.", field_name="tool_calls")
        if data.get("content") is None and not (data["role"] == "assistant" and data.get("tool_calls")):
            raise ValidationError(
                "Missing content (only an assistant message with tool_calls may omit it).", field_name="content"
            )


class FunctionSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=FUNCTION_NAME)
    description = fields.String()
    parameters = fields.Dict(load_default=lambda: {"type": "object", "properties": {}})
    strict = fields.Boolean(allow_none=True)


class ToolSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.Equal("function", error="Only function tools exist."))
    function = fields.Nested(FunctionSchema, required=True)


class ToolChoice(fields.Field):
    """``none``, ``auto``, ``required``, or ``{"type": "function", "function": {"name": ...}}``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value in ("none", "auto", "required"):
            return value
        if (
            isinstance(value, dict)
            and value.get("type") == "function"
            and isinstance(value.get("function"), dict)
            and isinstance(value["function"].get("name"), str)
        ):
            return {"type": "function", "function": {"name": value["function"]["name"]}}
        raise ValidationError('Must be "none", "auto", "required" or {"type": "function", "function": {"name"}}.')


class StreamOptionsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    include_usage = fields.Boolean(load_default=False)


def _token_bias(value: dict[str, Any]) -> None:
    for key, bias in value.items():
        if not str(key).isdigit():
            raise ValidationError(f"Keys must be token ids, got {key!r}.")
        if isinstance(bias, bool) or not isinstance(bias, int | float) or not -100 <= bias <= 100:
            raise ValidationError(f"The bias of token {key} must be a number between -100 and 100.")


class JsonSchemaFormatSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    name = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$"))
    description = fields.String()
    schema = fields.Dict(load_default=dict)
    strict = fields.Boolean(allow_none=True)


class ResponseFormatSchema(Schema):
    """``text``, ``json_object`` (any JSON object) or ``json_schema``: enforced by constrained decoding."""

    class Meta:
        unknown = EXCLUDE

    type = fields.String(required=True, validate=validate.OneOf(("text", "json_object", "json_schema")))
    json_schema = fields.Nested(JsonSchemaFormatSchema)

    @validates_schema
    def _schema_with_json_schema(self, data, **_kwargs) -> None:
        if data["type"] == "json_schema" and "json_schema" not in data:
            raise ValidationError("Required with type json_schema.", field_name="json_schema")


class SamplingSchema(Schema):
    """The generation settings a chat or completion request may carry; every one is applied by the worker."""

    class Meta:
        unknown = EXCLUDE

    max_tokens = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    max_completion_tokens = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    temperature = fields.Float(allow_none=True, validate=validate.Range(min=0, max=2))
    top_p = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1, min_inclusive=False))
    top_k = fields.Integer(allow_none=True, validate=validate.Range(min=0))
    min_p = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1))
    n = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_CHOICES))
    stop = StringOrStringList(allow_none=True, max_items=4, allow_empty_strings=False)
    seed = fields.Integer(allow_none=True)
    presence_penalty = fields.Float(allow_none=True, validate=validate.Range(min=-2, max=2))
    frequency_penalty = fields.Float(allow_none=True, validate=validate.Range(min=-2, max=2))
    repetition_penalty = fields.Float(allow_none=True, validate=validate.Range(min=0.01, max=10))
    logit_bias = fields.Dict(keys=fields.String(), allow_none=True, validate=_token_bias)
    logprobs = fields.Boolean(allow_none=True)
    top_logprobs = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=MAX_TOP_LOGPROBS))
    response_format = fields.Nested(ResponseFormatSchema, allow_none=True)

    @validates_schema
    def _top_logprobs_need_logprobs(self, data, **_kwargs) -> None:
        if data.get("top_logprobs") and not data.get("logprobs"):
            raise ValidationError("top_logprobs needs logprobs set to true.", field_name="top_logprobs")


GENERATION_FIELDS = (
    "messages",
    "prompt",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "seed",
    "stop",
    "stream",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "chat_template_kwargs",
    "reasoning_effort",
)


def generation_payload(loaded: dict[str, Any]) -> dict[str, Any]:
    """What a worker needs of a validated chat or completion request."""
    payload = {name: loaded[name] for name in GENERATION_FIELDS if loaded.get(name) is not None}
    max_tokens = loaded.get("max_completion_tokens") or loaded.get("max_tokens")
    if max_tokens:
        payload["max_tokens"] = max_tokens
    return payload


class ChatCompletionRequestSchema(SamplingSchema):
    """Fields OpenAI clients send that change nothing here (``user``) are accepted and ignored; every field
    that changes the answer is applied."""

    model = fields.String(required=True, validate=MODEL_ID)
    messages = fields.List(fields.Nested(ChatMessageSchema), required=True, validate=CONVERSATION)
    stream = fields.Boolean(load_default=False, allow_none=True)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    tools = fields.List(fields.Nested(ToolSchema), allow_none=True, validate=validate.Length(max=128))
    tool_choice = ToolChoice(allow_none=True)
    parallel_tool_calls = fields.Boolean(allow_none=True)
    chat_template_kwargs = fields.Dict(keys=fields.String(), allow_none=True)
    reasoning_effort = fields.String(
        allow_none=True, validate=validate.OneOf(("none", "minimal", "low", "medium", "high"))
    )
    user = fields.String(allow_none=True, validate=USER)

    @validates_schema
    def _tool_choice_names_a_tool(self, data, **_kwargs) -> None:
        choice = data.get("tool_choice")
        names = {tool["function"]["name"] for tool in data.get("tools") or []}
        if choice in ("required",) and not names:
            raise ValidationError("tool_choice 'required' needs tools.", field_name="tool_choice")
        if isinstance(choice, dict) and choice["function"]["name"] not in names:
            raise ValidationError(
                f"tool_choice names {choice['function']['name']!r}, which is not among the tools.",
                field_name="tool_choice",
            )


class ChatMessageOutSchema(Schema):
    role = fields.String()
    content = fields.String(allow_none=True)
    reasoning_content = fields.String()
    tool_calls = fields.List(fields.Dict())


class ChatChoiceSchema(Schema):
    index = fields.Integer()
    message = fields.Nested(ChatMessageOutSchema)
    finish_reason = fields.String()
    logprobs = fields.Raw(allow_none=True)


class PromptTokensDetailsSchema(Schema):
    cached_tokens = fields.Integer()


class UsageSchema(Schema):
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()
    prompt_tokens_details = fields.Nested(PromptTokensDetailsSchema)


class ChatCompletionSchema(Schema):
    id = fields.String()
    object = fields.String()
    created = fields.Integer()
    model = fields.String()
    choices = fields.List(fields.Nested(ChatChoiceSchema))
    usage = fields.Nested(UsageSchema)
    system_fingerprint = fields.String(allow_none=True)
    request_id = fields.String()
