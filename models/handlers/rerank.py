"""Cross-encoder rerankers (``models.cross_encoder``): a relevance score in [0, 1] for each (query, passage) pair.

Pairs are tokenized together as the model was trained (``[CLS] query [SEP] passage [SEP]``, cut from the longer
side to the model's length), run in batches of similar length (less padding), and answered in the order given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np
from transformers import AutoTokenizer

from config.errors import ApiError
from config.model_types import RERANK, WARMUP
from models import cross_encoder
from models.handlers.base import Cancelled, Emit, length_batches

MAX_BATCH = 16


class RerankHandler:
    def __init__(self, model: Any, tokenizer: Any, context_length: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length

    def warmup(self) -> None:
        self.score([("warm-up", "warm-up")])

    def _batch(self, pairs: list[tuple[str, str]]) -> tuple[mx.array, mx.array, mx.array]:
        encoded = self.tokenizer(
            [first for first, _ in pairs],
            [second for _, second in pairs],
            padding=True,
            truncation="longest_first",
            max_length=self.context_length,
            return_tensors="np",
        )
        ids = encoded["input_ids"]
        types = encoded.get("token_type_ids")
        types = np.zeros_like(ids) if types is None else types
        return mx.array(ids, dtype=mx.int32), mx.array(types, dtype=mx.int32), mx.array(encoded["attention_mask"])

    def score(
        self, pairs: list[tuple[str, str]], emit: Emit | None = None, cancelled: Cancelled | None = None
    ) -> tuple[list[float], int]:
        """Each pair's relevance (in the order given) and the tokens read; stops between batches once
        ``cancelled``."""
        scores: list[float] = [0.0] * len(pairs)
        tokens = 0
        lengths = [len(query) + len(passage) for query, passage in pairs]
        for indices in length_batches(lengths, MAX_BATCH, "rerank", emit, cancelled):
            ids, types, mask = self._batch([pairs[i] for i in indices])
            relevance = cross_encoder.relevance(self.model(ids, types, mask))
            for i, value in zip(indices, relevance.tolist(), strict=True):
                scores[i] = value
            tokens += int(mask.sum().item())
        return scores, tokens

    def run(self, operation: str, payload: dict[str, Any], emit: Emit, cancelled: Cancelled) -> dict[str, Any]:
        if operation == WARMUP:
            _scores, tokens = self.score([(payload.get("prompt") or "warm-up", "warm-up")])
            return {"prompt_tokens": tokens}
        if operation != RERANK:
            raise ValueError(f"a rerank model does not run {operation!r}")
        pairs = [(first, second) for first, second in payload["pairs"]]
        if any(not first or not second for first, second in pairs):
            raise ApiError(400, "Queries and documents must not be empty", code="invalid_value", param="documents")
        scores, tokens = self.score(pairs, emit, cancelled)
        return {"scores": scores, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def load(path: Path, context_length: int | None = None, limits: object = None) -> RerankHandler:
    model, config = cross_encoder.load(path)
    native = int(config.get("max_position_embeddings", 512))
    if config.get("model_type") in ("xlm-roberta", "roberta"):
        native -= int(config.get("pad_token_id", 1)) + 1  # RoBERTa's positions start after the padding id
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return RerankHandler(model, tokenizer, min(context_length or native, native))
