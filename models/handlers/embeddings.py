"""Sentence embeddings with mlx-embeddings (BERT-family models, mean-pooled and normalised)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx_embeddings.utils import load as load_embedding_model

from config.errors import ApiError
from models.handlers.base import PROGRESS, Cancelled, Emit, RequestCancelled

MAX_BATCH = 32


class EmbeddingsHandler:
    def __init__(self, model: Any, tokenizer: Any, context_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length

    def warmup(self) -> None:
        self.embed(["warm-up"])

    def embed(
        self, texts: list[str], emit: Emit | None = None, cancelled: Cancelled | None = None
    ) -> tuple[list[list[float]], int]:
        """Vectors and token count of ``texts``; stops between batches once ``cancelled`` says so."""
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), MAX_BATCH):
            if cancelled is not None and cancelled():
                raise RequestCancelled("cancelled between embedding batches")
            if emit is not None:
                emit(PROGRESS)
            batch = texts[start : start + MAX_BATCH]
            inputs = self.tokenizer(
                batch, return_tensors="mlx", padding=True, truncation=True, max_length=self.context_length
            )
            output = self.model(inputs["input_ids"], attention_mask=inputs["attention_mask"])
            mx.eval(output.text_embeds)
            vectors.extend(output.text_embeds.astype(mx.float32).tolist())
            tokens += int(inputs["attention_mask"].sum().item())
        return vectors, tokens

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == "warmup":
            _vectors, tokens = self.embed([payload.get("prompt") or "warm-up"])
            return {"prompt_tokens": tokens}
        texts = payload["input"]
        if any(not text for text in texts):
            raise ApiError(400, "input must not contain empty strings", code="invalid_value", param="input")
        vectors, tokens = self.embed(texts, emit, cancelled)
        return {"embeddings": vectors, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def load(path: Path, context_length: int | None = None, limits: object = None) -> EmbeddingsHandler:
    model, tokenizer = load_embedding_model(str(path))
    limit = context_length or int(getattr(model.config, "max_position_embeddings", 512))
    return EmbeddingsHandler(model, tokenizer, limit)
