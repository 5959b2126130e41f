"""The MLX cross-encoders compute what Hugging Face's reference implementations compute on the same weights.

No cross-encoder's trained weights can be installed here, so both architectures (BERT, as ms-marco MiniLM; and
XLM-RoBERTa, as bge-reranker) are built small with random weights, written as a checkpoint, and read by
``models.cross_encoder.load`` and by transformers' ``*ForSequenceClassification`` (torch, CPU).
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from models.cross_encoder import load, relevance
from models.random_cross_encoder import MS_MARCO_MINILM_L6, write_random_cross_encoder

SMALL = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
BERT = {**MS_MARCO_MINILM_L6, **SMALL, "vocab_size": 500, "max_position_embeddings": 64}
XLM_ROBERTA = {
    **SMALL,
    "architectures": ["XLMRobertaForSequenceClassification"],
    "model_type": "xlm-roberta",
    "hidden_act": "gelu",
    "vocab_size": 500,
    "max_position_embeddings": 66,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
}
TWO_LABELS = {**BERT, "id2label": {"0": "no", "1": "yes"}, "label2id": {"no": 0, "yes": 1}}


def padded_pairs(config: dict, lengths: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random pairs (first and second segment lengths), right-padded with the model's pad id."""
    rng = np.random.default_rng(1)
    pad = config["pad_token_id"]
    width = max(a + b for a, b in lengths)
    ids = np.full((len(lengths), width), pad, dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, (first, second) in enumerate(lengths):
        ids[row, : first + second] = rng.integers(3, config["vocab_size"], first + second)
        if config["type_vocab_size"] > 1:
            types[row, first : first + second] = 1
        mask[row, : first + second] = 1
    return ids, types, mask


@pytest.mark.parametrize("config", [BERT, XLM_ROBERTA, TWO_LABELS], ids=["bert", "xlm-roberta", "bert-2-labels"])
def test_mlx_logits_match_transformers(tmp_path: Path, config: dict):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    write_random_cross_encoder(config, tmp_path, seed=3)
    model, _config = load(tmp_path)
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    ids, types, mask = padded_pairs(config, [(5, 20), (9, 3), (4, 40)])
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(ids), token_type_ids=torch.tensor(types), attention_mask=torch.tensor(mask)
        ).logits.numpy()
    logits = model(mx.array(ids, dtype=mx.int32), mx.array(types, dtype=mx.int32), mx.array(mask, dtype=mx.int32))
    assert np.abs(np.array(logits) - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())
    assert np.array(logits).std() > 1e-3  # the random weights give distinct scores, not one constant
    scores = np.array(relevance(logits))
    wanted = (
        torch.sigmoid(torch.tensor(expected[:, 0]))
        if expected.shape[1] == 1
        else torch.softmax(torch.tensor(expected), -1)[:, -1]
    )
    assert np.abs(scores - wanted.numpy()).max() < 1e-5


def test_a_row_scores_the_same_alone_and_padded_in_a_batch(tmp_path: Path):
    write_random_cross_encoder(BERT, tmp_path, seed=4)
    model, _config = load(tmp_path)
    ids, types, mask = padded_pairs(BERT, [(6, 4), (5, 30)])
    batched = np.array(model(mx.array(ids), mx.array(types), mx.array(mask)))
    alone = np.array(model(mx.array(ids[:1, :10]), mx.array(types[:1, :10]), mx.array(mask[:1, :10])))
    assert np.abs(batched[0] - alone[0]).max() < 1e-5


def test_another_architecture_is_refused_by_name(tmp_path: Path):
    write_random_cross_encoder(BERT, tmp_path)
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"], "hidden_size": 8}')
    with pytest.raises(ValueError, match="BertModel is not a cross-encoder"):
        load(tmp_path)
