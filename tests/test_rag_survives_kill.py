"""An ingest whose control worker is killed midway leaves no orphans: the sweep undoes it.

A small stack of its own (its own Redis, so that no other control worker takes its RAG tasks): an embedding
worker, the web and a control worker. The ingest is held deterministically: the second file's embedding call
(request id ``<request id>.file2``) waits on a test hold, by which time the first file's chunks are in the
vector store and its record says ``ingesting``. Then the control worker is killed with SIGKILL.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path

import pymongo
import pytest
import redis
import requests

from rag.lancedb_store import LanceDBStore
from tests.conftest import EMBEDDING_MODEL, worker_is_live
from tests.holds import held_key, hold_key, holdable
from tests.stack import Stack, wait_until

FIRST = ("granite.txt", b"Granite is a coarse-grained igneous rock made mostly of quartz and feldspar.\n")
SECOND = ("basalt.txt", b"Basalt is a fine-grained volcanic rock that forms when lava cools quickly.\n")


@pytest.fixture()
def kill_stack(stack: Stack, tmp_path: Path):
    workdir = tmp_path
    mongo = stack.env["MONGODB_URL"].rsplit("/", 1)[0] + "/mlxf_ragkill"
    env = {**stack.env, "MONGODB_URL": mongo, "VECTOR_DIR": str(workdir / "vectors"), "AUTOSTART_CATALOG": "false"}
    small = Stack(workdir, env)
    try:
        yield small
    finally:
        small.stop_all()


def test_a_killed_ingest_is_undone_and_nothing_is_left(kill_stack):
    small = kill_stack
    small.start_redis()
    client = redis.Redis.from_url(small.env["REDIS_URL"])
    worker = small.start_worker(EMBEDDING_MODEL, "ragkill-embed")
    _web, base = small.start_web("ragkill-web")  # while the worker loads
    control = small.start_control("ragkill-control")
    wait_until(lambda: worker_is_live(client, EMBEDDING_MODEL), 120, "the embedding worker", worker.process)
    database = pymongo.MongoClient(small.env["MONGODB_URL"]).get_default_database()
    store = LanceDBStore(small.env["VECTOR_DIR"])
    collection = f"killed-{uuid.uuid4().hex[:6]}"

    request_id = holdable("ingest")
    client.set(hold_key(f"{request_id}.file2"), "1", ex=600)
    session = requests.Session()
    future = _post_in_background(
        session,
        f"{base}/api/rag/ingest",
        data={"collection": collection},
        files=[("files", FIRST), ("files", SECOND)],
        headers={"X-Request-ID": request_id},
    )
    wait_until(lambda: client.exists(held_key(f"{request_id}.file2")), 120, "the second file's embedding to be held")
    [document] = database["rag_documents"].find({"collection": collection})
    assert document["status"] == "ingesting" and document["filename"] == "granite.txt"
    assert store.count(collection, document["_id"]) == 1

    control.stop(signal.SIGKILL)
    response = future.result(timeout=60)
    assert response.status_code == 503 and response.json()["error"]["code"] == "worker_lost"
    client.delete(hold_key(f"{request_id}.file2"))

    small.start_control("ragkill-control-2")
    wait_until(
        lambda: database["rag_documents"].count_documents({"collection": collection}) == 0,
        60,
        "the sweep to undo the killed ingest",
    )
    assert store.count(collection) == 0
    listed = requests.get(f"{base}/api/rag/collections/{collection}", timeout=10)
    assert listed.status_code in (200, 404)
    if listed.status_code == 200:
        assert listed.json()["document_count"] == 0 and listed.json()["chunk_count"] == 0

    # The same files ingest afterwards as if the killed attempt had never happened.
    again = requests.post(
        f"{base}/api/rag/ingest",
        data={"collection": collection},
        files=[("files", FIRST), ("files", SECOND)],
        timeout=120,
    )
    assert again.status_code == 200, again.text
    assert again.json()["documents_ingested"] == 2 and again.json()["duplicates"] == []
    assert store.count(collection) == 2


def _post_in_background(session: requests.Session, url: str, **kwargs):
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(session.post, url, timeout=120, **kwargs)
    pool.shutdown(wait=False)
    return future
