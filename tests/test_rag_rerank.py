"""A user reranks a RAG query's retrieved chunks (``rerank: true``): with the model the request names, else the
collection's reranker, else the first loaded ``rerank`` model; with none loaded, a 400 says what to load.

The catalog's rerank model has random weights (none can be installed here), so these tests check which model
reranked, how many candidates and the order of the scores, never that the order is better; the chat model's
scores are checked against ``/v1/score`` of the same pairs.
"""

from __future__ import annotations

import pytest
import requests

from tests.conftest import CHAT_MODEL, RERANK_MODEL, load_model, unload_model
from tests.stack import ROOT

PASSAGES = [
    ("granite.txt", b"Granite is a coarse-grained igneous rock made mostly of quartz and feldspar."),
    ("festival.txt", b"The Zorblat festival is held every year in the town of Quillmere on the ninth of March."),
    ("basalt.txt", b"Basalt is a fine-grained volcanic rock that forms from lava cooling quickly."),
    ("tides.txt", b"Tides are caused by the gravitational pull of the Moon on the oceans of the Earth."),
]
QUESTION = "In which town is the Zorblat festival held?"
RERANK_MODEL_DIR = ROOT / ".data" / "models" / "mlx-fusion--ms-marco-MiniLM-L6-random"


def ingest(rag_url: str, collection: str, **form) -> requests.Response:
    files = [("files", passage) for passage in PASSAGES]
    return requests.post(f"{rag_url}/ingest", data={"collection": collection, **form}, files=files, timeout=300)


def query(rag_url: str, collection: str, **body) -> requests.Response:
    payload = {
        "query": QUESTION,
        "collection": collection,
        "similarity_threshold": -1,
        "generation_config": {"max_tokens": 1, "temperature": 0},
        **body,
    }
    return requests.post(f"{rag_url}/query", json=payload, timeout=120)


@pytest.fixture(scope="module")
def rocks(base_url: str, control_worker) -> str:
    assert ingest(f"{base_url}/api/rag", "rerank-rocks").status_code == 200
    return "rerank-rocks"


def test_the_first_candidates_are_reranked_by_the_model_named(rag_url, base_url, rocks):
    answer = query(rag_url, rocks, rerank=True, rerank_model=CHAT_MODEL, rerank_candidates=3, top_k=2)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["metadata"]["rerank"] is True and body["metadata"]["rerank_model"] == CHAT_MODEL
    scores = [source["rerank_score"] for source in body["sources"]]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)
    # The candidates were the first three of the retrieval; the two kept are the reranker's best of them.
    retrieved = query(rag_url, rocks, top_k=3).json()["sources"]
    texts = [source["text"] for source in retrieved]
    direct = requests.post(
        f"{base_url}/v1/score", json={"model": CHAT_MODEL, "text_1": QUESTION, "text_2": texts}, timeout=60
    ).json()
    best = sorted(range(3), key=lambda i: -direct["data"][i]["score"])[:2]
    assert [source["text"] for source in body["sources"]] == [texts[i] for i in best]
    assert scores == pytest.approx([direct["data"][i]["score"] for i in best], abs=1e-4)


def test_the_collection_s_reranker_then_a_loaded_rerank_model_is_the_default(rag_url, rocks):
    default = query(rag_url, rocks, rerank=True).json()
    assert default["metadata"]["rerank_model"] == RERANK_MODEL and "rerank_score" in default["sources"][0]
    assert ingest(rag_url, "rerank-own", rerank_model=CHAT_MODEL).status_code == 200
    detail = requests.get(f"{rag_url}/collections/rerank-own", timeout=30).json()
    assert detail["rerank_model"] == CHAT_MODEL
    own = query(rag_url, "rerank-own", rerank=True).json()
    assert own["metadata"]["rerank_model"] == CHAT_MODEL


def test_without_any_reranker_loaded_the_400_says_what_to_load(rag_url, base_url, rocks):
    assert unload_model(base_url, RERANK_MODEL, force=True).status_code == 200
    try:
        refused = query(rag_url, rocks, rerank=True)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "rerank" and "model_type 'rerank'" in error["message"]
        assert query(rag_url, rocks, rerank=True, rerank_model=CHAT_MODEL).status_code == 200
    finally:
        reloaded = load_model(base_url, str(RERANK_MODEL_DIR), RERANK_MODEL, model_type="rerank")
        assert reloaded.status_code == 200, reloaded.text
