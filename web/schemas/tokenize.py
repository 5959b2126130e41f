"""Tokenizer request and response bodies (vLLM's ``/tokenize`` and ``/detokenize`` shapes)."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from web.schemas.chat import ChatMessageSchema, ToolSchema
from web.schemas.fields import CONVERSATION, MODEL_ID

MAX_TOKENS = 1_000_000
"""Token ids one ``/detokenize`` takes (beyond any context length served here)."""


class TokenizeRequestSchema(Schema):
    """Either ``prompt`` (tokenized as a completion reads it) or ``messages`` (as a chat request reads them)."""

    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    prompt = fields.String()
    messages = fields.List(fields.Nested(ChatMessageSchema), validate=CONVERSATION)
    add_generation_prompt = fields.Boolean(
        load_default=True, metadata={"description": "With messages: end with the assistant's turn, as a chat does"}
    )
    add_special_tokens = fields.Boolean(
        metadata={"description": "With prompt (default true): add the tokenizer's special tokens, as a completion does"}
    )
    tools = fields.List(fields.Nested(ToolSchema), allow_none=True, validate=validate.Length(max=128))
    chat_template_kwargs = fields.Dict(keys=fields.String(), allow_none=True)
    return_token_strs = fields.Boolean(load_default=False, metadata={"description": "Also answer each token's text"})

    @validates_schema
    def _one_input(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if ("prompt" in data) == ("messages" in data):
            raise ValidationError("Give either prompt or messages (exactly one).", "prompt")
        if "messages" in data and "add_special_tokens" in data:
            raise ValidationError(
                "add_special_tokens applies to prompt; messages are tokenized as the chat template writes them.",
                "add_special_tokens",
            )
        for name in ("tools", "chat_template_kwargs"):
            if data.get(name) and "prompt" in data:
                raise ValidationError(f"{name} applies to messages, not to prompt.", name)


def tokenize_payload(body: dict[str, Any]) -> dict[str, Any]:
    """What the worker needs of a validated ``/tokenize`` request."""
    names = ("prompt", "messages", "add_special_tokens", "tools", "chat_template_kwargs", "return_token_strs")
    payload = {name: body[name] for name in names if body.get(name) is not None}
    if "messages" in body:
        payload["add_generation_prompt"] = body["add_generation_prompt"]
    return payload


class TokenizeResponseSchema(Schema):
    tokens = fields.List(fields.Integer(), required=True)
    count = fields.Integer(required=True)
    max_model_len = fields.Integer(required=True)
    token_strs = fields.List(fields.String(), metadata={"description": "With return_token_strs"})


class DetokenizeRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model = fields.String(required=True, validate=MODEL_ID)
    tokens = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=0)),
        required=True,
        validate=validate.Length(max=MAX_TOKENS),
    )


class DetokenizeResponseSchema(Schema):
    prompt = fields.String(required=True)
