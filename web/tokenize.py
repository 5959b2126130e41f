"""``POST /tokenize`` and ``POST /detokenize`` (vLLM's shapes): a language model's tokenizer, on its worker's queue."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView

from config.model_types import DETOKENIZE, TOKENIZE
from web.api import Blueprint, dispatcher
from web.schemas.tokenize import (
    DetokenizeRequestSchema,
    DetokenizeResponseSchema,
    TokenizeRequestSchema,
    TokenizeResponseSchema,
    tokenize_payload,
)

blp = Blueprint("tokenize", __name__, description="A language model's tokenizer (vLLM's tokenizer endpoints)")


@blp.route("/tokenize")
class Tokenize(MethodView):
    @blp.arguments(TokenizeRequestSchema)
    @blp.response(200, TokenizeResponseSchema)
    def post(self, body: dict[str, Any]):
        """The tokens a chat (``messages``) or a completion (``prompt``) of this model reads: ``count`` equals the
        ``usage.prompt_tokens`` of the same request."""
        call = dispatcher().start(body["model"], TOKENIZE, tokenize_payload(body), g.request_id)
        return dispatcher().result(call)


@blp.route("/detokenize")
class Detokenize(MethodView):
    @blp.arguments(DetokenizeRequestSchema)
    @blp.response(200, DetokenizeResponseSchema)
    def post(self, body: dict[str, Any]):
        call = dispatcher().start(body["model"], DETOKENIZE, {"tokens": body["tokens"]}, g.request_id)
        return dispatcher().result(call)
