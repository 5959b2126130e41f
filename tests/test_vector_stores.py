"""OpenAI vector stores with the stock ``openai`` client over the platform's RAG: a store is created, files are
uploaded and ingested (``upload_and_poll``), searched (retrieval only: filters, a score threshold, hybrid), listed,
retrieved and deleted, and the same data is a RAG collection (``/api/rag/query`` streams from it, its sources
first: before the model answers, even with its worker stopped); a file without text fails with ``invalid_file``.
Another key's store and job are 404 (a web of the session's stack with two user keys)."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator

import openai
import pytest
import requests

from tests.conftest import EMBEDDING_MODEL, worker_pid
from tests.stack import wait_until
from tests.used_keys import remember

OTTERS = b"Sea otters hold hands while they sleep, so that they do not drift apart on the water."
VOLCANO = b"A volcano erupts when magma rises through the crust and bursts out as lava and ash."
ADMIN = remember("sk-vector-stores-admin-8d41b2")


def upload(client: openai.OpenAI, store_id: str, name: str, data: bytes, topic: str):
    done = client.vector_stores.files.upload_and_poll(
        vector_store_id=store_id, file=(name, data), attributes={"topic": topic}, max_wait_seconds=120
    )
    assert done.status == "completed", done.last_error
    return done


def rag_stream(rag_url: str, collection: str, question: str) -> list[dict]:
    """The events of a streamed ``/api/rag/query`` (``rag.sources`` is sent once retrieval is done)."""
    body = {"query": question, "collection": collection, "stream": True, "generation_config": {"max_tokens": 4}}
    response = requests.post(f"{rag_url}/query", json=body, stream=True, timeout=120)
    assert response.status_code == 200, response.text
    lines = [line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: {")]
    return [json.loads(line[len("data: ") :]) for line in lines]


def test_a_vector_store_is_filled_searched_and_deleted_with_the_openai_client(client, rag_url):
    store = client.vector_stores.create(name="animals and rocks", metadata={"team": "docs"})
    assert store.object == "vector_store" and store.name == "animals and rocks" and store.file_counts.total == 0
    assert client.vector_stores.search(store.id, query="otters").data == []  # empty: nothing ingested yet
    otters = upload(client, store.id, "otters.txt", OTTERS, "otters")
    volcano = upload(client, store.id, "volcano.txt", VOLCANO, "volcano")
    assert otters.vector_store_id == store.id and otters.attributes == {"topic": "otters"}
    again = client.vector_stores.files.create(vector_store_id=store.id, file_id=otters.id)  # attached already
    assert again.status == "completed" and again.created_at == otters.created_at

    started = time.perf_counter()
    hits = client.vector_stores.search(store.id, query="Why do otters hold hands?", max_num_results=2).data
    searched_ms = (time.perf_counter() - started) * 1000
    assert [hit.file_id for hit in hits] == [otters.id, volcano.id]
    assert hits[0].filename == "otters.txt" and "hold hands" in hits[0].content[0].text
    assert hits[0].attributes == {"topic": "otters"} and hits[0].score > hits[1].score
    print(f"retrieval-only search: {searched_ms:.0f} ms")
    only = client.vector_stores.search(
        store.id, query="otters", filters={"type": "eq", "key": "topic", "value": "volcano"}
    ).data
    assert [hit.file_id for hit in only] == [volcano.id]
    none = client.vector_stores.search(store.id, query="otters", ranking_options={"score_threshold": 0.99})
    assert none.data == []
    hybrid = client.vector_stores.search(
        store.id, query="magma lava", max_num_results=1, ranking_options={"hybrid_search": {}}
    )
    assert [hit.file_id for hit in hybrid.data] == [volcano.id]
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.vector_stores.search(store.id, query="x", filters={"type": "gt", "key": "topic", "value": 1})

    got = client.vector_stores.retrieve(store.id)
    assert got.file_counts.completed == 2 and got.status == "completed" and got.metadata == {"team": "docs"}
    files = client.vector_stores.files.list(vector_store_id=store.id)
    assert {f.id for f in files.data} == {otters.id, volcano.id}
    assert [f.id for f in client.vector_stores.files.list(vector_store_id=store.id, limit=1)] == [volcano.id, otters.id]
    assert store.id in [s.id for s in client.vector_stores.list(limit=100)]
    collection = requests.get(f"{rag_url}/collections/{store.id}", timeout=10).json()  # the same data, both APIs
    assert collection["document_count"] == 2 and collection["embedding_model"] == EMBEDDING_MODEL
    events = rag_stream(rag_url, store.id, "Why do otters hold hands?")
    assert events[0]["object"] == "rag.sources" and events[0]["sources"][0]["metadata"]["file_id"] == otters.id
    assert events[-1]["object"] == "rag.done" and events[-1]["usage"]["completion_tokens"] <= 4

    deleted = client.vector_stores.files.delete(otters.id, vector_store_id=store.id)
    assert deleted.deleted
    assert [hit.file_id for hit in client.vector_stores.search(store.id, query="otters").data] == [volcano.id]
    assert client.files.retrieve(otters.id).purpose == "assistants"  # the file itself stays
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)
    assert requests.get(f"{rag_url}/collections/{store.id}", timeout=10).status_code == 404


def test_a_streamed_rag_query_sends_its_sources_before_the_model_answers(client, rag_url, spare_chat, redis_client):
    """The chat model's worker is stopped (SIGSTOP) while the query starts: no token can come, yet the sources do."""
    store = client.vector_stores.create(name="sources first")
    otters = upload(client, store.id, "otters.txt", OTTERS, "otters")
    stopped = worker_pid(redis_client, spare_chat)
    body = {"query": "Why do otters hold hands?", "collection": store.id, "model_id": spare_chat, "stream": True}
    os.kill(stopped, signal.SIGSTOP)
    try:
        response = requests.post(
            f"{rag_url}/query", json={**body, "generation_config": {"max_tokens": 4}}, stream=True, timeout=(5, 60)
        )
        lines = (line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: {"))
        sources = json.loads(next(lines)[len("data: ") :])
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert sources["object"] == "rag.sources" and sources["sources"][0]["metadata"]["file_id"] == otters.id
    rest = [json.loads(line[len("data: ") :]) for line in lines]
    assert rest[-1]["object"] == "rag.done" and rest[-1]["answer"]
    client.vector_stores.delete(store.id)


def test_a_file_without_text_fails_and_a_batch_file_is_refused(client, rag_url):
    store = client.vector_stores.create(name="bad files")
    failed = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("empty.txt", b"   \n  "), max_wait_seconds=120
    )
    assert failed.status == "failed" and failed.last_error.code == "invalid_file"
    assert client.vector_stores.retrieve(store.id).file_counts.failed == 1
    batch = client.files.create(
        file=(
            "b.jsonl",
            b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}\n',
        ),
        purpose="batch",
    )
    with pytest.raises(openai.BadRequestError, match="assistants or user_data"):
        client.vector_stores.files.create(vector_store_id=store.id, file_id=batch.id)
    client.vector_stores.delete(store.id)


@pytest.fixture(scope="module")
def two_keys(stack, supervisor, control_worker, base_url) -> Iterator[tuple[str, str, str]]:
    """A keyed web and two user keys (``rag``, ``batches``, ``jobs``); while they are stored every web of the
    session needs a key, so they are revoked at the end."""
    _service, base = stack.start_web("web-vector-owners", {"API_KEYS": ADMIN})
    admin = {"Authorization": f"Bearer {ADMIN}"}
    secrets, made = [], []
    try:
        for name in ("vs-alice", "vs-bob"):
            key = requests.post(
                f"{base}/admin/keys",
                headers=admin,
                json={"name": f"{name}-{uuid.uuid4().hex[:6]}", "scopes": ["rag", "batches", "jobs"]},
                timeout=30,
            )
            assert key.status_code == 201, key.text
            made.append(key.json()["id"])
            secrets.append(remember(key.json()["secret"]))
        yield base, secrets[0], secrets[1]
    finally:
        for key_id in made:
            requests.delete(f"{base}/admin/keys/{key_id}", headers=admin, timeout=30)
        wait_until(lambda: requests.get(f"{base_url}/v1/models", timeout=5).ok, 30, "the session's web open again")


def test_another_keys_vector_store_and_job_events_are_not_found(two_keys):
    base, alice_key, bob_key = two_keys
    alice = openai.OpenAI(base_url=f"{base}/v1", api_key=alice_key, max_retries=0, timeout=120)
    bob = openai.OpenAI(base_url=f"{base}/v1", api_key=bob_key, max_retries=0, timeout=120)
    store = alice.vector_stores.create(name="alice's")
    upload(alice, store.id, "otters.txt", OTTERS, "otters")
    for call in (
        lambda: bob.vector_stores.retrieve(store.id),
        lambda: bob.vector_stores.search(store.id, query="otters"),
        lambda: bob.vector_stores.files.list(vector_store_id=store.id),
        lambda: bob.vector_stores.delete(store.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert store.id not in [s.id for s in bob.vector_stores.list()]

    job = requests.post(
        f"{base}/api/mcp/jobs",
        headers={"Authorization": f"Bearer {alice_key}"},
        json={"model_id": EMBEDDING_MODEL, "operation": "embed", "input": {"input": ["alice's"]}},
        timeout=30,
    )
    assert job.status_code == 202, job.text
    job_url = f"{base}/api/mcp/jobs/{job.json()['job_id']}"
    as_bob = {"Authorization": f"Bearer {bob_key}"}
    assert requests.get(f"{job_url}/events", headers=as_bob, timeout=10).status_code == 404
    assert requests.get(job_url, params={"wait": 5}, headers=as_bob, timeout=10).status_code == 404
    mine = requests.get(f"{job_url}/events", headers={"Authorization": f"Bearer {alice_key}"}, timeout=60)
    assert mine.status_code == 200 and "event: job.final" in mine.text
    alice.vector_stores.delete(store.id)
