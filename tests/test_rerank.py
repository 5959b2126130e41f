"""A user reranks passages with ``/v1/rerank`` (Jina's and Cohere's shape) and scores pairs with ``/v1/score``
(vLLM's), with the catalog's cross-encoder or the chat model.

The cross-encoder is ms-marco-MiniLM-L-6-v2's architecture with RANDOM weights (no cross-encoder's weights can be
installed here; ``models/random_cross_encoder.py``): its scores are noise, so these tests check the mechanics
(order, ``top_n``, documents, usage, batching, the two endpoints agreeing), and
``tests/unit/test_cross_encoder_reference.py`` checks its forward pass against transformers'. The chat model's
relevance is real, if weak: SmolLM2-135M's probability of answering "yes".
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from models.random_cross_encoder import write_random_cross_encoder
from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, RERANK_MODEL, load_model, unload_model
from tests.hub_cache import lay_out_in_hf_cache
from tests.stack import ROOT

CACHED_XLM_ROBERTA = "test-org/xlm-roberta-reranker-cached"
XLM_ROBERTA = {
    "architectures": ["XLMRobertaForSequenceClassification"],
    "model_type": "xlm-roberta",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "hidden_act": "gelu",
    "vocab_size": 30522,
    "max_position_embeddings": 130,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 0,
    "id2label": {"0": "LABEL_0"},
}
"""bge-reranker's architecture, small, with bert-base-uncased's tokenizer (the one installed here) and its pad id."""

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Bananas are yellow fruit grown in the tropics.",
    "Paris is the capital and largest city of France.",
    "The mitochondria is the powerhouse of the cell.",
    "Stock markets fell sharply today.",
]


def post(base_url: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{base_url}{path}", json=body, timeout=120)


def test_results_come_most_relevant_first_with_their_index_and_document(base_url):
    many = [f"Passage number {i} about {'France' if i % 3 else 'the weather'} and more words." for i in range(40)]
    answer = post(base_url, "/v1/rerank", {"model": RERANK_MODEL, "query": QUERY, "documents": many})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    scores = [result["relevance_score"] for result in body["results"]]
    assert sorted(result["index"] for result in body["results"]) == list(range(40))
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores)) > 1  # random weights, yet each pair its own score
    assert all(result["document"]["text"] == many[result["index"]] for result in body["results"])
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] > 40 * 10
    # Scored in batches of similar length, a passage scores as it does alone.
    alone = post(base_url, "/v1/rerank", {"model": RERANK_MODEL, "query": QUERY, "documents": [many[7]]}).json()
    batched = next(result for result in body["results"] if result["index"] == 7)
    assert alone["results"][0]["relevance_score"] == pytest.approx(batched["relevance_score"], abs=1e-5)


def test_top_n_objects_and_no_documents(base_url):
    body = {
        "model": RERANK_MODEL,
        "query": QUERY,
        "documents": [{"text": text} for text in DOCUMENTS],
        "top_n": 2,
        "return_documents": False,
    }
    top = post(base_url, "/v1/rerank", body).json()["results"]
    everything = post(base_url, "/v1/rerank", {"model": RERANK_MODEL, "query": QUERY, "documents": DOCUMENTS}).json()
    assert [r["index"] for r in top] == [r["index"] for r in everything["results"][:2]]
    assert all("document" not in result for result in top)


def test_score_agrees_with_rerank(base_url):
    scores = post(base_url, "/v1/score", {"model": RERANK_MODEL, "text_1": QUERY, "text_2": DOCUMENTS}).json()
    assert [item["index"] for item in scores["data"]] == [0, 1, 2, 3]
    ranked = post(base_url, "/v1/rerank", {"model": RERANK_MODEL, "query": QUERY, "documents": DOCUMENTS}).json()
    by_index = {result["index"]: result["relevance_score"] for result in ranked["results"]}
    assert [item["score"] for item in scores["data"]] == pytest.approx([by_index[i] for i in range(4)], abs=1e-5)
    pairwise = post(
        base_url, "/v1/score", {"model": RERANK_MODEL, "text_1": [QUERY, QUERY], "text_2": DOCUMENTS[:2]}
    ).json()
    assert [item["score"] for item in pairwise["data"]] == pytest.approx([by_index[0], by_index[1]], abs=1e-5)


def test_the_chat_model_reranks_by_its_probability_of_yes(base_url):
    ranked = post(base_url, "/v1/rerank", {"model": CHAT_MODEL, "query": QUERY, "documents": DOCUMENTS})
    assert ranked.status_code == 200, ranked.text
    results = ranked.json()["results"]
    assert results[0]["index"] == 1  # the one passage that answers
    assert all(0.0 < result["relevance_score"] < 1.0 for result in results)


def test_an_xlm_roberta_reranker_loads_from_the_hugging_face_cache(base_url, tmp_path):
    tokenizer = ROOT / ".data" / "models" / "sentence-transformers--all-MiniLM-L6-v2"
    write_random_cross_encoder(XLM_ROBERTA, tmp_path / "model", tokenizer, seed=5)
    lay_out_in_hf_cache(Path(os.environ["HF_HUB_CACHE"]), CACHED_XLM_ROBERTA, tmp_path / "model")
    loaded = load_model(base_url, CACHED_XLM_ROBERTA, None, model_type="rerank")
    assert loaded.status_code == 200, loaded.text
    try:
        body = {"model": CACHED_XLM_ROBERTA, "query": QUERY, "documents": DOCUMENTS + [" ".join(["long"] * 500)]}
        ranked = post(base_url, "/v1/rerank", body)
        assert ranked.status_code == 200, ranked.text
        assert sorted(result["index"] for result in ranked.json()["results"]) == [0, 1, 2, 3, 4]
        assert ranked.json()["usage"]["prompt_tokens"] < 4 * 30 + 128  # the long passage is cut to the context
    finally:
        unload_model(base_url, CACHED_XLM_ROBERTA, force=True)


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/rerank", {"model": "no/such-model", "query": "q", "documents": ["d"]}, 404, "model"),
        ("/v1/rerank", {"model": EMBEDDING_MODEL, "query": "q", "documents": ["d"]}, 400, "model"),
        ("/v1/rerank", {"model": RERANK_MODEL, "query": "", "documents": ["d"]}, 400, "query"),
        ("/v1/rerank", {"model": RERANK_MODEL, "query": "q", "documents": []}, 400, "documents"),
        ("/v1/rerank", {"model": RERANK_MODEL, "query": "q", "documents": ["d", ""]}, 400, "documents"),
        ("/v1/rerank", {"model": RERANK_MODEL, "query": "q", "documents": [{"image": "x"}]}, 400, "documents"),
        ("/v1/rerank", {"model": RERANK_MODEL, "query": "q", "documents": ["d"], "top_n": 0}, 400, "top_n"),
        ("/v1/score", {"model": RERANK_MODEL, "text_1": ["a", "b"], "text_2": ["c"]}, 400, "text_2"),
        ("/v1/score", {"model": RERANK_MODEL, "text_1": "a"}, 400, "text_2"),
        ("/v1/chat/completions", {"model": RERANK_MODEL, "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
    ],
)
def test_unknown_models_and_bad_input_are_named(base_url, path, body, status, param):
    answer = post(base_url, path, body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param
