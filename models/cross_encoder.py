"""Cross-encoders in MLX: BERT and XLM-RoBERTa sequence classification (ms-marco MiniLM, bge-reranker), as
Hugging Face's ``BertForSequenceClassification`` and ``XLMRobertaForSequenceClassification`` compute them.

The encoders are mlx-embeddings' (the same code that serves the embedding models); this module adds the
classification heads under Hugging Face's weight names, so a checkpoint's ``model.safetensors`` loads as it is.
A pair's relevance is the sigmoid of its logit (one label) or the probability of the last label (two or more),
as vLLM and sentence-transformers score them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_embeddings.models import bert, xlm_roberta

ARCHITECTURES = ("BertForSequenceClassification", "XLMRobertaForSequenceClassification")


def label_count(config: dict[str, Any]) -> int:
    return int(config.get("num_labels") or len(config.get("id2label") or {}) or 1)


class RobertaClassificationHead(nn.Module):
    """The ``<s>`` token's state through a tanh layer, then the labels (Hugging Face's ``classifier``)."""

    def __init__(self, hidden_size: int, labels: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, labels)

    def __call__(self, states: mx.array) -> mx.array:
        return self.out_proj(mx.tanh(self.dense(states[:, 0])))


class BertCrossEncoder(nn.Module):
    """``bert`` (with its pooler: the ``[CLS]`` state through a tanh layer) and a linear ``classifier``."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.bert = bert.Model(bert.ModelArgs.from_dict(config))
        self.classifier = nn.Linear(int(config["hidden_size"]), label_count(config))

    def __call__(self, input_ids: mx.array, token_type_ids: mx.array, attention_mask: mx.array) -> mx.array:
        output = self.bert(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        return self.classifier(output.pooler_output)


class XLMRobertaCrossEncoder(nn.Module):
    """``roberta`` (no pooler) and the classification head on the ``<s>`` token."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        args = xlm_roberta.ModelArgs.from_dict({**config, "add_pooling_layer": False})
        self.roberta = xlm_roberta.Model(args)
        self.classifier = RobertaClassificationHead(int(config["hidden_size"]), label_count(config))

    def __call__(self, input_ids: mx.array, token_type_ids: mx.array, attention_mask: mx.array) -> mx.array:
        output = self.roberta(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.classifier(output.last_hidden_state)


def build(config: dict[str, Any]) -> nn.Module:
    """The cross-encoder of ``config`` (a Hugging Face ``config.json``), its weights uninitialised."""
    architecture = next(iter(config.get("architectures") or []), "")
    if architecture == "BertForSequenceClassification":
        return BertCrossEncoder(config)
    if architecture == "XLMRobertaForSequenceClassification":
        return XLMRobertaCrossEncoder(config)
    raise ValueError(
        f"{architecture or 'no architecture'} is not a cross-encoder served here ({', '.join(ARCHITECTURES)})"
    )


def relevance(logits: mx.array) -> mx.array:
    """One score in [0, 1] per row: the sigmoid of a single logit, else the softmax probability of the last label."""
    if logits.shape[-1] == 1:
        return mx.sigmoid(logits[:, 0])
    return mx.softmax(logits, axis=-1)[:, -1]


def load(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The cross-encoder in the folder ``path`` (``config.json`` and ``model.safetensors``), in eval mode."""
    config = json.loads((path / "config.json").read_text())
    model = build(config)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {path} (a cross-encoder's model.safetensors)")
    weights: dict[str, mx.array] = {}
    for file in files:
        weights.update(mx.load(str(file)))
    # float32 on every backend: a cross-encoder is small, and MLX's CPU matmuls in half precision are slower here
    weights = {
        name: value.astype(mx.float32) if mx.issubdtype(value.dtype, mx.floating) else value
        for name, value in weights.items()
        if not name.endswith("position_ids")
    }
    model.load_weights(list(weights.items()), strict=True)
    model.eval()
    mx.eval(model.parameters())
    return model, config
