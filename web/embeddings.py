"""``POST /v1/embeddings``: validate, hand to the embedding model's worker, shape OpenAI's answer."""

from __future__ import annotations

import base64
import struct
from typing import Any

from flask import g
from flask.views import MethodView

from web.api import Blueprint, dispatcher
from web.schemas.embeddings import EmbeddingListSchema, EmbeddingRequestSchema

blp = Blueprint("embeddings", __name__, url_prefix="/v1", description="OpenAI embeddings")


def encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embedding_list(result: dict[str, Any], model: str, encoding_format: str, request_id: str) -> dict[str, Any]:
    """OpenAI's answer from the worker's result (also each line of an embeddings batch)."""
    data = [
        {"object": "embedding", "index": i, "embedding": encode(v, encoding_format)}
        for i, v in enumerate(result["embeddings"])
    ]
    return {"object": "list", "data": data, "model": model, "usage": result["usage"], "request_id": request_id}


def embedding_payload(body: dict[str, Any]) -> dict[str, Any]:
    """What the worker needs of a validated request."""
    return {"input": body["input"], "dimensions": body.get("dimensions")}


@blp.route("/embeddings")
class Embeddings(MethodView):
    @blp.arguments(EmbeddingRequestSchema)
    @blp.response(200, EmbeddingListSchema)
    def post(self, body: dict[str, Any]):
        result = dispatcher().result(dispatcher().start(body["model"], "embed", embedding_payload(body), g.request_id))
        return embedding_list(result, body["model"], body["encoding_format"], g.request_id)
