"""One contract for every vector store: LanceDB in a temporary folder always, Weaviate when WEAVIATE_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from rag.vectors import ChunkRecord, CollectionNotFound, VectorStore

DIMENSION = 16
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


@pytest.fixture(params=["lancedb", "weaviate"])
def store(request, tmp_path) -> Iterator[VectorStore]:
    if request.param == "lancedb":
        from rag.lancedb_store import LanceDBStore

        yield LanceDBStore(tmp_path / "vectors")
        return
    url = os.environ.get("WEAVIATE_URL")
    if not url:
        pytest.skip("no Weaviate server can run on this machine; set WEAVIATE_URL to run the contract against one")
    from rag.weaviate_store import WeaviateStore

    weaviate_store = WeaviateStore(url, api_key=os.environ.get("WEAVIATE_API_KEY", ""))
    yield weaviate_store
    for name in weaviate_store.list_collections():
        if name.startswith("contract_"):
            weaviate_store.drop_collection(name)
    weaviate_store.close()


@pytest.fixture
def collection() -> str:
    return f"contract_{uuid.uuid4().hex[:8]}"


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def word(number: int) -> str:
    return WORDS[number % len(WORDS)]


def corpus(seed: int = 7, documents: int = 3, chunks_per_document: int = 10) -> list[ChunkRecord]:
    """Random unit vectors; document ``doc-k``'s chunks carry ``{"lang": en|fr, "part": k}`` and words."""
    rng = np.random.default_rng(seed)
    records = []
    for k in range(documents):
        for index in range(chunks_per_document):
            records.append(
                ChunkRecord(
                    chunk_id=f"doc-{k}_chunk_{index}",
                    vector=unit(rng.normal(size=DIMENSION)).tolist(),
                    text=f"Chunk {index} of document {k}: {word(index)} {word(index + k)} words.",
                    document_id=f"doc-{k}",
                    file=f"file-{k}.pdf",
                    page=index + 1 if k != 2 else None,
                    chunk_index=index,
                    metadata={"lang": "en" if k != 1 else "fr", "part": k, "tags": ["x", "y"]},
                )
            )
    return records


def cosine(a, b) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture
def filled(store, collection) -> list[ChunkRecord]:
    records = corpus()
    store.ensure_collection(collection, DIMENSION)
    assert store.upsert(collection, records) == len(records)
    return records


def test_search_returns_the_nearest_first_with_cosine_scores(store, collection, filled):
    target = filled[13]
    query = unit(np.asarray(target.vector) + 0.05 * unit(np.random.default_rng(1).normal(size=DIMENSION)))
    hits = store.search(collection, query.tolist(), top_k=5)
    expected = sorted(filled, key=lambda record: cosine(query, record.vector), reverse=True)[:5]
    assert [hit.chunk_id for hit in hits] == [record.chunk_id for record in expected]
    for hit, record in zip(hits, expected, strict=True):
        assert hit.score == pytest.approx(cosine(query, record.vector), abs=1e-4)
        assert -1.0 <= hit.score <= 1.0
    best = hits[0]
    assert (best.chunk_id, best.text, best.document_id, best.file, best.page, best.chunk_index) == (
        target.chunk_id,
        target.text,
        target.document_id,
        target.file,
        target.page,
        target.chunk_index,
    )
    assert best.metadata == {"lang": "fr", "part": 1, "tags": ["x", "y"]}
    opposite = {hit.chunk_id: hit.score for hit in store.search(collection, (-query).tolist(), top_k=30)}
    assert (
        opposite[target.chunk_id] == pytest.approx(-cosine(query, target.vector), abs=1e-4)
        and min(opposite.values()) < -0.9
    )


def test_threshold_keeps_only_similar_enough_chunks(store, collection, filled):
    query = np.asarray(filled[0].vector)
    scores = sorted((cosine(query, record.vector) for record in filled), reverse=True)
    threshold = (scores[2] + scores[3]) / 2
    hits = store.search(collection, query.tolist(), top_k=10, threshold=threshold)
    assert len(hits) == 3 and all(hit.score >= threshold for hit in hits)
    assert hits[0].chunk_id == filled[0].chunk_id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert store.search(collection, query.tolist(), top_k=10, threshold=1.01) == []


def test_metadata_filters_and_document_ids_restrict_the_search(store, collection, filled):
    query = filled[0].vector
    french = store.search(collection, query, top_k=30, filters={"lang": "fr"})
    assert len(french) == 10 and {hit.document_id for hit in french} == {"doc-1"}
    both = store.search(collection, query, top_k=30, filters={"lang": "en", "part": 2})
    assert {hit.document_id for hit in both} == {"doc-2"} and len(both) == 10
    assert store.search(collection, query, top_k=30, filters={"lang": "de"}) == []
    only = store.search(collection, query, top_k=30, document_ids=["doc-0", "doc-2"])
    assert {hit.document_id for hit in only} == {"doc-0", "doc-2"} and len(only) == 20
    assert store.search(collection, query, top_k=30, document_ids=["doc-0"], filters={"lang": "fr"}) == []
    assert store.search(collection, query, top_k=30, document_ids=[]) == []
    with pytest.raises(ValueError, match="filter 'tags'"):
        store.search(collection, query, filters={"tags": ["x"]})


def test_full_text_search_finds_a_word(store, collection, filled):
    hits = store.search_text(collection, "foxtrot", top_k=10)
    assert hits and all("foxtrot" in hit.text for hit in hits)
    assert {hit.chunk_id for hit in hits} == {record.chunk_id for record in filled if "foxtrot" in record.text}
    assert all(hit.score > 0 for hit in hits)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)
    restricted = store.search_text(collection, "foxtrot", top_k=10, filters={"lang": "fr"})
    assert restricted and {hit.document_id for hit in restricted} == {"doc-1"}
    assert store.search_text(collection, "zulu", top_k=10) == []


def test_full_text_hits_scored_by_a_vector_carry_its_cosine_similarity(store, collection, filled):
    query = unit(np.arange(1, DIMENSION + 1, dtype=float))
    hits = store.search_text(collection, "foxtrot", top_k=10, vector=query.tolist())
    by_id = {record.chunk_id: record for record in filled}
    assert hits
    for hit in hits:
        assert hit.score == pytest.approx(float(np.dot(query, by_id[hit.chunk_id].vector)), abs=1e-5)
    with pytest.raises(ValueError, match="dimensions"):
        store.search_text(collection, "foxtrot", vector=[1.0, 0.0])


def test_upserting_the_same_ids_twice_does_not_duplicate(store, collection, filled):
    changed = [
        ChunkRecord(**{**record.__dict__, "text": record.text + " revised", "metadata": {"lang": "en", "part": 9}})
        for record in filled[:5]
    ]
    assert store.upsert(collection, changed) == 5
    assert store.count(collection) == len(filled)
    hits = store.search(collection, filled[0].vector, top_k=1)
    assert hits[0].chunk_id == filled[0].chunk_id and hits[0].text.endswith(" revised")
    assert hits[0].metadata == {"lang": "en", "part": 9}
    assert len(store.search(collection, filled[0].vector, top_k=30, filters={"part": 9})) == 5


def test_delete_document_removes_its_chunks_from_search_and_counts(store, collection, filled):
    assert store.count(collection) == 30
    assert store.count(collection, document_id="doc-1") == 10
    assert store.delete_document(collection, "doc-1") == 10
    assert store.count(collection, document_id="doc-1") == 0
    assert store.count(collection) == 20
    assert all(hit.document_id != "doc-1" for hit in store.search(collection, filled[13].vector, top_k=30))
    assert all(hit.document_id != "doc-1" for hit in store.search_text(collection, "document 1", top_k=30))
    assert store.delete_document(collection, "doc-1") == 0


def test_settle_keeps_every_chunk_searchable(store, collection, filled):
    store.settle(collection)
    assert store.count(collection) == len(filled)
    assert store.search(collection, filled[7].vector, top_k=1)[0].chunk_id == filled[7].chunk_id
    with pytest.raises(CollectionNotFound):
        store.settle("missing")


def test_collections_are_listed_counted_and_dropped(store, collection, filled):
    other = collection + "-b"
    store.ensure_collection(other, DIMENSION)
    store.ensure_collection(other, DIMENSION)
    assert {collection, other} <= set(store.list_collections())
    assert store.count(other) == 0
    assert store.drop_collection(collection) == 30
    assert collection not in store.list_collections() and other in store.list_collections()
    assert store.count(collection) == 0
    assert store.drop_collection(collection) == 0
    with pytest.raises(CollectionNotFound):
        store.search(collection, filled[0].vector)
    store.drop_collection(other)


def test_bad_input_is_refused(store, collection, filled):
    with pytest.raises(ValueError, match="16-dimensional"):
        store.ensure_collection(collection, 8)
    with pytest.raises(ValueError, match="dimensions"):
        store.upsert(collection, [ChunkRecord(**{**filled[0].__dict__, "vector": [0.1] * 8})])
    with pytest.raises(ValueError, match="dimensions"):
        store.search(collection, [0.1] * 8)
    with pytest.raises(ValueError, match="collection name"):
        store.ensure_collection("../escape", DIMENSION)
    with pytest.raises(CollectionNotFound):
        store.upsert("missing", filled[:1])


def test_lancedb_searches_through_its_vector_index(tmp_path):
    from rag.lancedb_store import LanceDBStore

    store = LanceDBStore(tmp_path / "vectors", vector_index_min_rows=300)
    records = corpus(seed=3, documents=4, chunks_per_document=100)
    store.ensure_collection("indexed", DIMENSION)
    store.upsert("indexed", records[:200])
    table = store.db.open_table("indexed")
    assert "vector_idx" not in {index.name for index in table.list_indices()}
    store.upsert("indexed", records[200:])
    assert "vector_idx" in {index.name for index in table.list_indices()}
    for record in records[::37]:
        hits = store.search("indexed", record.vector, top_k=3)
        assert hits[0].chunk_id == record.chunk_id and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert store.count("indexed", document_id="doc-3") == 100


def test_settling_folds_appended_rows_into_the_index(tmp_path):
    from rag.lancedb_store import LanceDBStore

    store = LanceDBStore(tmp_path / "vectors", vector_index_min_rows=300)
    records = corpus(seed=5, documents=4, chunks_per_document=100)
    store.ensure_collection("settled", DIMENSION)
    store.settle("settled")  # no index yet: nothing to do
    store.upsert("settled", records[:300])
    store.upsert("settled", records[300:320])  # 20 rows: under a tenth of the table, left unindexed
    table = store.db.open_table("settled")
    assert table.index_stats("vector_idx").num_unindexed_rows == 20
    store.settle("settled")
    assert table.index_stats("vector_idx").num_unindexed_rows == 0
    assert store.search("settled", records[310].vector, top_k=1)[0].chunk_id == records[310].chunk_id


def test_lancedb_sees_another_connections_writes(tmp_path):
    from rag.lancedb_store import LanceDBStore

    writer, reader = LanceDBStore(tmp_path / "vectors"), LanceDBStore(tmp_path / "vectors")
    records = corpus(documents=2)
    writer.ensure_collection("shared", DIMENSION)
    writer.upsert("shared", records[:10])
    assert reader.count("shared") == 10
    writer.upsert("shared", records[10:])
    assert reader.count("shared") == 20
    assert reader.search("shared", records[15].vector, top_k=1)[0].chunk_id == records[15].chunk_id
    writer.delete_document("shared", "doc-1")
    assert reader.search("shared", records[15].vector, top_k=1)[0].document_id == "doc-0"


def test_make_store_chooses_by_settings(tmp_path):
    from config.settings import Settings
    from rag.lancedb_store import LanceDBStore
    from rag.store import make_store
    from rag.weaviate_store import WeaviateStore

    embedded = make_store(Settings.from_env({"DATA_DIR": str(tmp_path)}))
    assert isinstance(embedded, LanceDBStore) and embedded.path == tmp_path / "vectors"
    remote = make_store(
        Settings.from_env({"WEAVIATE_URL": "https://weaviate.internal:8443", "WEAVIATE_GRPC_PORT": "443"})
    )
    assert isinstance(remote, WeaviateStore) and remote._client is None
    assert (remote.host, remote.port, remote.secure, remote.grpc_port) == ("weaviate.internal", 8443, True, 443)


def test_a_document_larger_than_one_delete_call_is_deleted_whole(store, collection):
    """Weaviate's ``delete_many`` removes at most ``QUERY_MAXIMUM_RESULTS`` (10,000 by default) per call."""
    store.ensure_collection(collection, DIMENSION)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(10_050, DIMENSION))
    big = [
        ChunkRecord(f"big_chunk_{i}", unit(v).tolist(), f"chunk {i}", "big", "big.txt", None, i, {})
        for i, v in enumerate(vectors)
    ]
    assert store.upsert(collection, big) == len(big)
    assert store.delete_document(collection, "big") == len(big)
    assert store.count(collection, document_id="big") == 0


def test_a_query_fetches_past_chunks_it_may_not_use_until_it_has_top_k(store, collection):
    """Chunks of a document still being ingested are nearer the query than the ready ones: the query looks
    further instead of answering with none."""
    from rag.retrieval import retrieve

    store.ensure_collection(collection, DIMENSION)
    query = unit(np.ones(DIMENSION))
    rng = np.random.default_rng(5)
    pending = [
        ChunkRecord(
            f"pending_{i}", unit(query + 0.05 * rng.normal(size=DIMENSION)).tolist(), "p", "pending", "p", None, i, {}
        )
        for i in range(200)
    ]
    ready = [
        ChunkRecord(
            f"ready_{i}", unit(query + 0.8 * rng.normal(size=DIMENSION)).tolist(), "r", "ready", "r", None, i, {}
        )
        for i in range(5)
    ]
    store.upsert(collection, pending + ready)

    def ready_only(hits):
        return [hit for hit in hits if hit.document_id == "ready"]

    for mode in ("vector", "hybrid"):
        found = retrieve(store, collection, "r", query.tolist(), top_k=3, mode=mode, keep=ready_only)
        assert [item.hit.document_id for item in found] == ["ready"] * 3, mode
    everything = retrieve(store, collection, "r", query.tolist(), top_k=10, keep=ready_only)
    assert len(everything) == 5  # the collection is exhausted: all five ready chunks, no more rounds
