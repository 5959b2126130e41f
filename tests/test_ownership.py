"""Owned objects: jobs, webhooks, stored responses, files, batches and collections belong to the key that created
them. Another user key gets 404 for them (never 403: their existence is not shown) and never sees them in lists or
totals; a webhook receives the events of its owner's jobs only; an admin key sees everything. A collection its
owner shares is readable by every key and still written only by its owner.

A web of the session's stack with an admin key (``API_KEYS``) and two user keys made through ``/admin/keys``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL
from tests.stack import wait_until
from tests.used_keys import remember

ADMIN = remember("sk-owners-admin-5c1e7a")
USER_SCOPES = ["inference", "jobs", "rag", "batches"]


class As:
    """Requests to the keyed web as one key."""

    def __init__(self, base: str, secret: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {secret}"}

    def __getattr__(self, method: str) -> Callable[..., requests.Response]:
        def call(path: str, **kwargs) -> requests.Response:
            return requests.request(method, f"{self.base}{path}", headers=self.headers, timeout=120, **kwargs)

        return call


@pytest.fixture(scope="module")
def keyed(stack, supervisor, control_worker, base_url) -> Iterator[dict[str, As]]:
    """While its user keys are stored, every web of the session needs a key: they are revoked at the end."""
    _service, base = stack.start_web("web-owners", {"API_KEYS": ADMIN})
    admin = As(base, ADMIN)
    callers, made = {"admin": admin}, []
    try:
        for name in ("alice", "bob"):
            key = admin.post("/admin/keys", json={"name": f"{name}-{uuid.uuid4().hex[:6]}", "scopes": USER_SCOPES})
            assert key.status_code == 201, key.text
            made.append(key.json()["id"])
            callers[name] = As(base, remember(key.json()["secret"]))
        yield callers
    finally:
        for key_id in made:
            admin.delete(f"/admin/keys/{key_id}")
        wait_until(lambda: requests.get(f"{base_url}/v1/models", timeout=5).ok, 30, "the session's web open again")


def assert_not_found(response: requests.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "not_found_error"


def submit(caller: As, text: str, callback: str | None = None) -> str:
    body = {"model_id": EMBEDDING_MODEL, "operation": "embed", "input": {"input": [text]}}
    if callback:
        body["callback_url"] = callback
    accepted = caller.post("/api/mcp/jobs", json=body)
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["job_id"]


def listed_jobs(caller: As) -> tuple[set[str], int]:
    page = caller.get("/api/mcp/jobs", params={"limit": 100}).json()
    return {job["job_id"] for job in page["jobs"]}, page["total"]


def test_jobs_and_webhooks_are_their_owners(keyed, receiver):
    alice, bob, admin = keyed["alice"], keyed["bob"], keyed["admin"]
    hooks = {}
    for name, caller in (("alice", alice), ("bob", bob), ("admin", admin)):
        made = caller.post("/api/mcp/webhooks", json={"url": receiver.url(f"/own-{name}"), "events": ["job.completed"]})
        assert made.status_code == 201, made.text
        hooks[name] = made.json()["webhook_id"]

    alices, bobs = submit(alice, "alice's"), submit(bob, "bob's")
    for job_id in (alices, bobs):
        wait_until(
            lambda j=job_id: admin.get(f"/api/mcp/jobs/{j}").json()["status"] == "completed", 60, f"job {job_id}"
        )

    # Another key: 404 for every verb, and absent from lists and totals.
    assert_not_found(bob.get(f"/api/mcp/jobs/{alices}"))
    assert_not_found(bob.delete(f"/api/mcp/jobs/{alices}"))
    assert alice.get(f"/api/mcp/jobs/{alices}").json()["status"] == "completed"
    bob_sees, bob_total = listed_jobs(bob)
    assert bobs in bob_sees and alices not in bob_sees and bob_total == len(bob_sees)
    admin_sees, _ = listed_jobs(admin)
    assert {alices, bobs} <= admin_sees
    for verb in ("get", "delete"):
        assert_not_found(getattr(bob, verb)(f"/api/mcp/webhooks/{hooks['alice']}"))
    assert_not_found(bob.get(f"/api/mcp/webhooks/{hooks['alice']}/deliveries"))
    assert {w["webhook_id"] for w in bob.get("/api/mcp/webhooks").json()["webhooks"]} == {hooks["bob"]}
    assert {hooks["alice"], hooks["bob"], hooks["admin"]} <= {
        w["webhook_id"] for w in admin.get("/api/mcp/webhooks").json()["webhooks"]
    }

    # Each subscription gets its owner's jobs' events; the admin's gets everyone's. One fan-out creates every
    # delivery of an event, so once the admin's has both, the others' are decided.
    wait_until(
        lambda: {alices, bobs} <= {r.payload["job"]["job_id"] for r in receiver.at("/own-admin")}, 60, "deliveries"
    )

    def delivered_jobs(name: str) -> set[str]:
        page = admin.get(f"/api/mcp/webhooks/{hooks[name]}/deliveries", params={"limit": 100}).json()
        return {delivery["job_id"] for delivery in page["deliveries"]}

    assert alices in delivered_jobs("alice") and bobs not in delivered_jobs("alice")
    assert bobs in delivered_jobs("bob") and alices not in delivered_jobs("bob")


def test_stored_responses_are_their_owners(keyed):
    alice, bob, admin = keyed["alice"], keyed["bob"], keyed["admin"]
    made = alice.post("/v1/responses", json={"model": CHAT_MODEL, "input": "Hi", "max_output_tokens": 2})
    assert made.status_code == 200, made.text
    response_id = made.json()["id"]
    assert_not_found(bob.get(f"/v1/responses/{response_id}"))
    assert_not_found(bob.delete(f"/v1/responses/{response_id}"))
    continued = bob.post(
        "/v1/responses",
        json={"model": CHAT_MODEL, "input": "And?", "max_output_tokens": 2, "previous_response_id": response_id},
    )
    assert continued.status_code == 404 and continued.json()["error"]["param"] == "previous_response_id"
    assert alice.get(f"/v1/responses/{response_id}").status_code == 200
    assert admin.get(f"/v1/responses/{response_id}").status_code == 200


def ingest(caller: As, collection: str, text: str, **form) -> requests.Response:
    return caller.post(
        "/api/rag/ingest",
        data={"collection": collection, **form},
        files=[("files", (f"{uuid.uuid4().hex[:6]}.txt", text.encode()))],
    )


def test_collections_are_their_owners_unless_shared(keyed):
    alice, bob, admin = keyed["alice"], keyed["bob"], keyed["admin"]
    name = f"alice-notes-{uuid.uuid4().hex[:6]}"
    made = ingest(alice, name, "The lighthouse keeper is called Ida Brenn.")
    assert made.status_code == 200, made.text
    document_id = made.json()["document_ids"][0]

    assert_not_found(bob.get(f"/api/rag/collections/{name}"))
    assert_not_found(bob.delete(f"/api/rag/collections/{name}"))
    assert_not_found(bob.delete(f"/api/rag/documents/{name}/{document_id}"))
    assert_not_found(bob.post("/api/rag/query", json={"collection": name, "query": "Who keeps the lighthouse?"}))
    assert name not in {c["name"] for c in bob.get("/api/rag/collections").json()["collections"]}
    taken = ingest(bob, name, "Bob's own text.")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "collection_name_taken", taken.text
    assert name in {c["name"] for c in admin.get("/api/rag/collections").json()["collections"]}

    # Shared by its owner: every key reads it; only the owner writes it.
    assert ingest(alice, name, "The harbour has nine lanterns.", shared="true").status_code == 200
    shared = bob.get(f"/api/rag/collections/{name}")
    assert shared.status_code == 200 and shared.json()["shared"] is True
    assert name in {c["name"] for c in bob.get("/api/rag/collections").json()["collections"]}
    for refused in (
        bob.delete(f"/api/rag/collections/{name}"),
        bob.delete(f"/api/rag/documents/{name}/{document_id}"),
        ingest(bob, name, "Bob writes here."),
    ):
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "collection_read_only", refused.text
    assert alice.delete(f"/api/rag/collections/{name}").status_code == 200


def test_files_and_batches_are_their_owners(keyed):
    alice, bob, admin = keyed["alice"], keyed["bob"], keyed["admin"]
    line = {
        "custom_id": "only",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": EMBEDDING_MODEL, "input": "alice's line"},
    }
    uploaded = alice.post("/v1/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", json.dumps(line))})
    assert uploaded.status_code == 200, uploaded.text
    file_id = uploaded.json()["id"]
    for verb, path in (("get", f"/v1/files/{file_id}"), ("get", f"/v1/files/{file_id}/content")):
        assert_not_found(getattr(bob, verb)(path))
    assert file_id not in {f["id"] for f in bob.get("/v1/files").json()["data"]}
    stolen = bob.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    )
    assert_not_found(stolen)

    made = alice.post(
        "/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"}
    )
    assert made.status_code == 200, made.text
    batch_id = made.json()["id"]
    assert_not_found(bob.get(f"/v1/batches/{batch_id}"))
    assert_not_found(bob.post(f"/v1/batches/{batch_id}/cancel"))
    assert batch_id not in {b["id"] for b in bob.get("/v1/batches").json()["data"]}
    wait_until(lambda: alice.get(f"/v1/batches/{batch_id}").json()["status"] == "completed", 60, "alice's batch")
    output = alice.get(f"/v1/batches/{batch_id}").json()["output_file_id"]
    assert_not_found(bob.get(f"/v1/files/{output}/content"))
    assert json.loads(alice.get(f"/v1/files/{output}/content").text)["custom_id"] == "only"
    assert admin.get(f"/v1/batches/{batch_id}").status_code == 200
    assert_not_found(bob.delete(f"/v1/files/{file_id}"))
    assert alice.delete(f"/v1/files/{file_id}").status_code == 200
