"""Chat completion request and response bodies (OpenAI's shapes, plus ``request_id``)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from web.schemas.fields import MessageContent, StringOrStringList

ROLES = ("system", "developer", "user", "assistant", "tool")


class ChatMessageSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    content = MessageContent(required=True, allow_none=True)
    name = fields.String()


class StreamOptionsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    include_usage = fields.Boolean(load_default=False)


class ChatCompletionRequestSchema(Schema):
    """Fields OpenAI clients send that the platform does not use are accepted and ignored,
    except those whose silent omission would mislead (``n`` > 1, ``logprobs``, ``tools``)."""

    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=validate.Length(min=1))
    messages = fields.List(fields.Nested(ChatMessageSchema), required=True, validate=validate.Length(min=1))
    max_tokens = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    max_completion_tokens = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    temperature = fields.Float(allow_none=True, validate=validate.Range(min=0, max=2))
    top_p = fields.Float(allow_none=True, validate=validate.Range(min=0, max=1, min_inclusive=False))
    n = fields.Integer(allow_none=True, validate=validate.Equal(1, error="Only n=1 is supported."))
    stream = fields.Boolean(load_default=False, allow_none=True)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    stop = StringOrStringList(allow_none=True, max_items=4, allow_empty_strings=False)
    seed = fields.Integer(allow_none=True)
    presence_penalty = fields.Float(allow_none=True, validate=validate.Range(min=-2, max=2))
    frequency_penalty = fields.Float(allow_none=True, validate=validate.Range(min=-2, max=2))
    logprobs = fields.Boolean(allow_none=True, validate=validate.Equal(False, error="logprobs are not supported yet."))
    tools = fields.List(fields.Dict(), allow_none=True)
    user = fields.String(allow_none=True)

    @validates_schema
    def _no_tools(self, data, **_kwargs) -> None:
        if data.get("tools"):
            raise ValidationError("Tool calling is not supported yet.", field_name="tools")


class ChatMessageOutSchema(Schema):
    role = fields.String()
    content = fields.String(allow_none=True)


class ChatChoiceSchema(Schema):
    index = fields.Integer()
    message = fields.Nested(ChatMessageOutSchema)
    finish_reason = fields.String()
    logprobs = fields.Raw(allow_none=True)


class UsageSchema(Schema):
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()


class ChatCompletionSchema(Schema):
    id = fields.String()
    object = fields.String()
    created = fields.Integer()
    model = fields.String()
    choices = fields.List(fields.Nested(ChatChoiceSchema))
    usage = fields.Nested(UsageSchema)
    system_fingerprint = fields.String(allow_none=True)
    request_id = fields.String()
