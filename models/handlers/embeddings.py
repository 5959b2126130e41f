"""Sentence embeddings with mlx-embeddings (BERT-family models, mean-pooled and normalised).

Inputs are texts or token ids (OpenAI's four ``input`` shapes). They are
embedded in batches of similar length (less padding), and answered in input
order. ``dimensions`` shortens the vectors (truncated, then renormalised) only
for a model trained for it: one whose ``config.json`` lists its
``matryoshka_dimensions``; any other size is a 400.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from mlx_embeddings.utils import load as load_embedding_model

from config.errors import ApiError
from models.handlers.base import Cancelled, Emit, length_batches

MAX_BATCH = 32


def shorten(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` components of each vector, scaled back to unit length."""
    kept = vectors[:, :dimensions]
    return kept / np.maximum(np.linalg.norm(kept, axis=1, keepdims=True), 1e-12)


class EmbeddingsHandler:
    def __init__(self, model: Any, tokenizer: Any, context_length: int, matryoshka: tuple[int, ...] = ()) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.matryoshka = matryoshka
        self.vocab_size = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))

    def warmup(self) -> None:
        self.embed(["warm-up"])

    def _token_batch(self, batch: list[list[int]]) -> tuple[mx.array, mx.array]:
        pad = self.tokenizer.pad_token_id or 0
        width = max(len(ids) for ids in batch)
        ids = np.full((len(batch), width), pad, dtype=np.int32)
        mask = np.zeros((len(batch), width), dtype=np.int32)
        for row, tokens in enumerate(batch):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return mx.array(ids), mx.array(mask)

    def _inputs(self, batch: list[str] | list[list[int]]) -> tuple[mx.array, mx.array]:
        if batch and isinstance(batch[0], list):
            return self._token_batch(batch)  # type: ignore[arg-type]
        encoded = self.tokenizer(
            batch, return_tensors="mlx", padding=True, truncation=True, max_length=self.context_length
        )
        return encoded["input_ids"], encoded["attention_mask"]

    def embed(
        self, inputs: list[str] | list[list[int]], emit: Emit | None = None, cancelled: Cancelled | None = None
    ) -> tuple[list[list[float]], int]:
        """Vectors (in input order) and token count of ``inputs``; stops between batches once ``cancelled``."""
        vectors: list[Any] = [None] * len(inputs)
        tokens = 0
        for indices in length_batches([len(one) for one in inputs], MAX_BATCH, "embedding", emit, cancelled):
            input_ids, attention_mask = self._inputs([inputs[i] for i in indices])
            output = self.model(input_ids, attention_mask=attention_mask)
            mx.eval(output.text_embeds)
            for i, vector in zip(indices, output.text_embeds.astype(mx.float32).tolist(), strict=True):
                vectors[i] = vector
            tokens += int(attention_mask.sum().item())
        return vectors, tokens

    def _check(self, payload: dict[str, Any]) -> list[str] | list[list[int]]:
        given = payload["input"]
        if isinstance(given, dict):
            token_lists = given["tokens"]
            too_long = next((i for i, ids in enumerate(token_lists) if len(ids) > self.context_length), None)
            if too_long is not None:
                raise ApiError(
                    400,
                    f"input[{too_long}] has {len(token_lists[too_long])} tokens; this model reads at most "
                    f"{self.context_length}",
                    code="context_length_exceeded",
                    param="input",
                )
            if any(t >= self.vocab_size for ids in token_lists for t in ids):
                raise ApiError(
                    400,
                    f"Token ids must be below the vocabulary size {self.vocab_size}",
                    code="invalid_value",
                    param="input",
                )
            return token_lists
        if any(not text for text in given):
            raise ApiError(400, "input must not contain empty strings", code="invalid_value", param="input")
        return given

    def _dimensions(self, payload: dict[str, Any], native: int) -> int | None:
        wanted = payload.get("dimensions")
        if not wanted or wanted == native:
            return None
        if wanted in self.matryoshka and wanted < native:
            return wanted
        trained = f"; it was trained for {sorted(self.matryoshka)}" if self.matryoshka else ""
        raise ApiError(
            400,
            f"This model's embeddings have {native} dimensions and it was not trained to be shortened to {wanted}"
            f"{trained}",
            code="invalid_value",
            param="dimensions",
        )

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == "warmup":
            _vectors, tokens = self.embed([payload.get("prompt") or "warm-up"])
            return {"prompt_tokens": tokens}
        inputs = self._check(payload)
        native = int(self.model.config.hidden_size)
        dimensions = self._dimensions(payload, native)
        vectors, tokens = self.embed(inputs, emit, cancelled)
        if dimensions is not None:
            vectors = shorten(np.asarray(vectors, dtype=np.float32), dimensions).tolist()
        return {"embeddings": vectors, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def load(path: Path, context_length: int | None = None, limits: object = None) -> EmbeddingsHandler:
    model, tokenizer = load_embedding_model(str(path))
    limit = context_length or int(getattr(model.config, "max_position_embeddings", 512))
    config = json.loads((path / "config.json").read_text())
    return EmbeddingsHandler(model, tokenizer, limit, tuple(config.get("matryoshka_dimensions") or ()))
