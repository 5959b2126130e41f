"""``POST /v1/rerank`` (Jina's and Cohere's shape) and ``POST /v1/score`` (vLLM's): relevance scores from a
``rerank`` model (a cross-encoder) or a chat model (pointwise: its probability of "yes"), on the model's queue."""

from __future__ import annotations

import time
import uuid
from typing import Any

from flask import g
from flask.views import MethodView

from config.model_types import RERANK
from web.api import Blueprint, dispatcher
from web.schemas.rerank import RerankRequestSchema, RerankResponseSchema, ScoreRequestSchema, ScoreResponseSchema

blp = Blueprint("rerank", __name__, url_prefix="/v1", description="Rerank and score (query, passage) pairs")


def scored(model: str, pairs: list[tuple[str, str]], request_id: str) -> dict[str, Any]:
    """The worker's ``scores`` (in the order of ``pairs``) and ``usage``."""
    return dispatcher().result(dispatcher().start(model, RERANK, {"pairs": pairs}, request_id))


@blp.route("/rerank")
class Rerank(MethodView):
    @blp.arguments(RerankRequestSchema)
    @blp.response(200, RerankResponseSchema)
    def post(self, body: dict[str, Any]):
        """The documents most relevant first (``top_n`` of them), each with its ``index`` in the request."""
        documents = body["documents"]
        result = scored(body["model"], [(body["query"], document) for document in documents], g.request_id)
        ranked = sorted(range(len(documents)), key=lambda i: (-result["scores"][i], i))[: body.get("top_n")]
        results = [
            {
                "index": i,
                "relevance_score": result["scores"][i],
                **({"document": {"text": documents[i]}} if body["return_documents"] else {}),
            }
            for i in ranked
        ]
        return {
            "id": f"rerank-{uuid.uuid4().hex}",
            "model": body["model"],
            "results": results,
            "usage": result["usage"],
            "request_id": g.request_id,
        }


@blp.route("/score")
class Score(MethodView):
    @blp.arguments(ScoreRequestSchema)
    @blp.response(200, ScoreResponseSchema)
    def post(self, body: dict[str, Any]):
        """One score per pair, in the order of ``text_2``."""
        first, second = body["text_1"], body["text_2"]
        pairs = list(zip(first * len(second) if len(first) == 1 else first, second, strict=True))
        result = scored(body["model"], pairs, g.request_id)
        return {
            "id": f"score-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": body["model"],
            "data": [{"index": i, "object": "score", "score": score} for i, score in enumerate(result["scores"])],
            "usage": result["usage"],
            "request_id": g.request_id,
        }
