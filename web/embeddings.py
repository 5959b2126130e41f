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


@blp.route("/embeddings")
class Embeddings(MethodView):
    @blp.arguments(EmbeddingRequestSchema)
    @blp.response(200, EmbeddingListSchema)
    def post(self, body: dict[str, Any]):
        payload = {"input": body["input"], "dimensions": body.get("dimensions")}
        result = dispatcher().result(dispatcher().start(body["model"], "embed", payload, g.request_id))
        vectors = result["embeddings"]
        data = [
            {"object": "embedding", "index": i, "embedding": encode(v, body["encoding_format"])}
            for i, v in enumerate(vectors)
        ]
        return {
            "object": "list",
            "data": data,
            "model": body["model"],
            "usage": result["usage"],
            "request_id": g.request_id,
        }
