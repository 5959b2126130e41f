"""``POST /v1/completions`` bodies (OpenAI's legacy completions, plus ``request_id``)."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from web.schemas.chat import SamplingSchema, StreamOptionsSchema
from web.schemas.fields import MODEL_ID, USER

MAX_PROMPTS = 16
MAX_LOGPROBS = 5
DEFAULT_MAX_TOKENS = 16
"""OpenAI's default for completions (chat's is the model's)."""


class Prompt(fields.Field):
    """A string or a list of strings; token-id arrays are refused (this API takes text)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not isinstance(prompts, list) or not prompts:
            raise ValidationError("Must be a string or a non-empty array of strings.")
        if not all(isinstance(prompt, str) for prompt in prompts):
            raise ValidationError("Token-id prompts are not supported; send text.")
        if len(prompts) > MAX_PROMPTS:
            raise ValidationError(f"At most {MAX_PROMPTS} prompts per request.")
        if any(not prompt for prompt in prompts):
            raise ValidationError("Prompts must not be empty.")
        return prompts


class CompletionRequestSchema(SamplingSchema):
    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    prompt = Prompt(required=True)
    max_tokens = fields.Integer(load_default=DEFAULT_MAX_TOKENS, validate=validate.Range(min=1))
    logprobs = fields.Integer(allow_none=True, validate=validate.Range(min=0, max=MAX_LOGPROBS))
    echo = fields.Boolean(load_default=False)
    suffix = fields.String(allow_none=True)
    best_of = fields.Integer(allow_none=True, validate=validate.Range(min=1))
    stream = fields.Boolean(load_default=False, allow_none=True)
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    user = fields.String(allow_none=True, validate=USER)

    @validates_schema
    def _supported(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data.get("suffix"):
            raise ValidationError("suffix (insertion) is not supported by this platform's models.", "suffix")
        if data.get("best_of") not in (None, 1, data.get("n") or 1):
            raise ValidationError("best_of is not supported; ask for n completions instead.", "best_of")
        if data.get("echo") and data.get("logprobs") is not None:
            raise ValidationError("echo with logprobs is not supported: prompt tokens get no logprobs here.", "echo")
        if data.get("response_format"):
            raise ValidationError("response_format belongs to chat completions.", "response_format")


class CompletionChoiceSchema(Schema):
    text = fields.String()
    index = fields.Integer()
    logprobs = fields.Raw(allow_none=True)
    finish_reason = fields.String()


class CompletionSchema(Schema):
    id = fields.String()
    object = fields.String()
    created = fields.Integer()
    model = fields.String()
    system_fingerprint = fields.String(allow_none=True)
    choices = fields.List(fields.Nested(CompletionChoiceSchema))
    usage = fields.Dict()
    request_id = fields.String()
