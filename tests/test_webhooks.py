"""Webhooks: registration, signed deliveries verified by independent verifiers, retries, 410, redirects."""

from __future__ import annotations

import base64
import hashlib
import hmac

import requests
from standardwebhooks import Webhook as StandardVerifier

from tests.conftest import EMBEDDING_MODEL, SESSION_CALLBACK_SECRET, submit_job, wait_for_job
from tests.receiver import Answer
from tests.stack import wait_until

ALL_EVENTS = ["job.queued", "job.processing", "job.completed", "job.failed", "job.cancelled"]


def register(jobs_url: str, url: str, events: list[str], **extra) -> requests.Response:
    return requests.post(f"{jobs_url}/webhooks", json={"url": url, "events": events, **extra}, timeout=10)


def embed_job(jobs_url: str, **extra) -> str:
    response = submit_job(jobs_url, EMBEDDING_MODEL, "embed", {"input": "hello"}, **extra)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def deliveries(jobs_url: str, webhook_id: str) -> list[dict]:
    return requests.get(f"{jobs_url}/webhooks/{webhook_id}/deliveries", timeout=10).json()["deliveries"]


def test_every_event_arrives_signed_for_both_verifiers(jobs_url, receiver):
    secret = "webhook-secret-123"
    created = register(jobs_url, receiver.url("/signed"), ALL_EVENTS, secret=secret, metadata={"team": "t2"})
    assert created.status_code == 201, created.text
    webhook = created.json()
    assert webhook["webhook_id"].startswith("wh-") and webhook["status"] == "active"
    assert "secret" not in webhook  # a secret the caller chose is never echoed

    job_id = embed_job(jobs_url, metadata={"user_id": "u1"})
    wait_until(lambda: "job.completed" in receiver.events("/signed", job_id), 60, "job.completed at the receiver")
    # fan-out runs in parallel, so events may arrive out of order: each carries its timestamp and the job's status
    assert sorted(receiver.events("/signed", job_id)) == ["job.completed", "job.processing", "job.queued"]

    verifier = StandardVerifier(base64.b64encode(secret.encode()).decode())
    for received in receiver.at("/signed"):
        assert received.headers["X-Webhook-ID"] == webhook["webhook_id"]
        expected = hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
        assert received.headers["X-Webhook-Signature"] == f"sha256={expected}"
        verifier.verify(received.body, {k.lower(): v for k, v in received.headers.items()})
    completed = [r for r in receiver.at("/signed") if r.event == "job.completed"][-1].payload
    assert completed["event"] == "job.completed" and completed["timestamp"].endswith("Z")
    assert completed["job"]["job_id"] == job_id and completed["job"]["status"] == "completed"
    assert completed["job"]["metadata"] == {"user_id": "u1"} and completed["job"]["completed_at"]
    assert len(completed["job"]["result"]["embeddings"][0]) == 384

    def listed() -> dict:
        found = requests.get(f"{jobs_url}/webhooks", timeout=10).json()["webhooks"]
        return next(w for w in found if w["webhook_id"] == webhook["webhook_id"])

    # The receiver has each body before the platform records the answer it gave.
    wait_until(lambda: listed()["success_count"] >= 3, 30, "three successes recorded")
    assert listed()["last_triggered_at"]
    requests.delete(f"{jobs_url}/webhooks/{webhook['webhook_id']}", timeout=10)


def test_generated_secret_and_callback_url_are_signed(jobs_url, receiver):
    created = register(jobs_url, receiver.url("/generated"), ["job.completed"]).json()
    assert created["secret"].startswith("whsec_")
    job_id = embed_job(jobs_url, callback_url=receiver.url("/callback"), callback_secret="callback-secret-1")
    wait_until(lambda: "job.completed" in receiver.events("/generated", job_id), 60, "the webhook delivery")
    wait_until(lambda: "job.completed" in receiver.events("/callback", job_id), 60, "the callback delivery")
    delivered = [r for r in receiver.at("/generated") if r.payload["job"]["job_id"] == job_id][0]
    StandardVerifier(created["secret"]).verify(delivered.body, {k.lower(): v for k, v in delivered.headers.items()})
    callback_verifier = StandardVerifier(base64.b64encode(b"callback-secret-1").decode())
    callbacks = [r for r in receiver.at("/callback") if r.payload["job"]["job_id"] == job_id]
    assert sorted(r.event for r in callbacks) == ["job.completed", "job.processing", "job.queued"]
    for received in callbacks:
        assert received.headers["X-Webhook-ID"] == "callback"
        callback_verifier.verify(received.body, {k.lower(): v for k, v in received.headers.items()})
    requests.delete(f"{jobs_url}/webhooks/{created['webhook_id']}", timeout=10)


def test_a_callback_without_its_own_secret_is_signed_with_the_configured_one(jobs_url, receiver):
    job_id = embed_job(jobs_url, callback_url=receiver.url("/configured"))
    wait_until(lambda: "job.completed" in receiver.events("/configured", job_id), 60, "the callback delivery")
    verifier = StandardVerifier(base64.b64encode(SESSION_CALLBACK_SECRET.encode()).decode())
    callbacks = [r for r in receiver.at("/configured") if r.payload["job"]["job_id"] == job_id]
    assert sorted(r.event for r in callbacks) == ["job.completed", "job.processing", "job.queued"]
    for received in callbacks:
        verifier.verify(received.body, {k.lower(): v for k, v in received.headers.items()})


def test_a_failing_receiver_that_recovers_gets_every_event(jobs_url, receiver):
    receiver.script("/flaky", [Answer(500), Answer(500), Answer(503, {"Retry-After": "1"})])
    webhook = register(jobs_url, receiver.url("/flaky"), ALL_EVENTS, secret="flaky-secret").json()
    job_id = embed_job(jobs_url)
    wait_for_job(jobs_url, job_id)

    def all_delivered() -> bool:
        listed = deliveries(jobs_url, webhook["webhook_id"])
        return len(listed) == 3 and all(d["status"] == "delivered" for d in listed)

    wait_until(all_delivered, 60, "every event delivered despite the failures")
    answered = {r.event for r in receiver.at("/flaky")}
    assert answered == {"job.queued", "job.processing", "job.completed"}
    attempts = [a for d in deliveries(jobs_url, webhook["webhook_id"]) for a in d["attempts"]]
    codes = sorted(a.get("status_code") for a in attempts)
    assert codes.count(500) == 2 and codes.count(503) == 1 and codes.count(200) == 3
    honoured = [a for a in attempts if a.get("status_code") == 503]
    assert honoured[0]["retry_in_seconds"] == 1.0
    # every attempt of one delivery carries the same message id, so receivers can drop duplicates
    by_event: dict[str, set[str]] = {}
    for received in receiver.at("/flaky"):
        by_event.setdefault(received.event, set()).add(received.headers["webhook-id"])
    assert all(len(ids) == 1 for ids in by_event.values())
    stats = next(
        w
        for w in requests.get(f"{jobs_url}/webhooks", timeout=10).json()["webhooks"]
        if w["webhook_id"] == webhook["webhook_id"]
    )
    assert stats["failure_count"] == 3 and stats["success_count"] == 3
    requests.delete(f"{jobs_url}/webhooks/{webhook['webhook_id']}", timeout=10)


def test_gone_disables_the_webhook_and_redirects_are_not_followed(jobs_url, receiver):
    receiver.script("/gone", [Answer(410)])
    receiver.script("/moved", [Answer(302, {"Location": receiver.url("/elsewhere")})] * 10)
    gone = register(jobs_url, receiver.url("/gone"), ["job.completed"]).json()
    moved = register(jobs_url, receiver.url("/moved"), ["job.completed"]).json()
    first = embed_job(jobs_url)
    wait_for_job(jobs_url, first)

    def gone_disabled() -> bool:
        return requests.get(f"{jobs_url}/webhooks/{gone['webhook_id']}", timeout=10).json()["status"] == "disabled"

    wait_until(gone_disabled, 30, "the 410 to disable the webhook")
    wait_until(lambda: len(receiver.at("/moved")) >= 2, 30, "the redirected delivery to be retried")
    assert receiver.at("/elsewhere") == []
    later = embed_job(jobs_url)  # its event comes after the webhook was disabled
    wait_for_job(jobs_url, later)
    wait_until(lambda: receiver.events("/moved", later), 30, "the later job's event to be fanned out")
    assert len(receiver.at("/gone")) == 1  # disabled at once: no retry, no later event
    # the first job's delivery, once its attempts are recorded (the receiver has a request before it is recorded)
    first_delivery = [d for d in deliveries(jobs_url, moved["webhook_id"]) if d["job_id"] == first]
    assert len(first_delivery) == 1 and first_delivery[0]["attempts"], first_delivery
    assert first_delivery[0]["attempts"][0]["status_code"] == 302
    for webhook in (gone, moved):
        deleted = requests.delete(f"{jobs_url}/webhooks/{webhook['webhook_id']}", timeout=10)
        assert deleted.status_code == 200
        assert deleted.json()["status"] == "deleted" and deleted.json()["webhook_id"] == webhook["webhook_id"]
        assert requests.get(f"{jobs_url}/webhooks/{webhook['webhook_id']}", timeout=10).status_code == 404


def test_private_addresses_and_bad_bodies_are_refused(jobs_url):
    cases = [
        ({"url": "http://10.0.0.7/hook", "events": ["job.completed"]}, "url"),
        ({"url": "http://169.254.169.254/latest", "events": ["job.completed"]}, "url"),
        ({"url": "http://192.168.1.1/", "events": ["job.completed"]}, "url"),
        ({"url": "ftp://example.org/hook", "events": ["job.completed"]}, "url"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["job.exploded"]}, "events[0]"),
        ({"url": "http://127.0.0.1:9/hook", "events": []}, "events"),
        ({"events": ["job.completed"]}, "url"),
        ({"url": "http://[::1/hook", "events": ["job.completed"]}, "url"),
        ({"url": "http://a..b/hook", "events": ["job.completed"]}, "url"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["job.completed"], "secret": "whsec_!!not-base64!!"}, "secret"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["job.completed"], "metadata": {"$where": "1"}}, "metadata"),
        ({"url": "http://127.0.0.1:9/hook", "events": ["job.completed"], "metadata": {"a": {"b.c": 1}}}, "metadata"),
    ]
    before = len(requests.get(f"{jobs_url}/webhooks", timeout=10).json()["webhooks"])
    for body, param in cases:
        response = requests.post(f"{jobs_url}/webhooks", json=body, timeout=10)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param, (body, response.json())
    assert len(requests.get(f"{jobs_url}/webhooks", timeout=10).json()["webhooks"]) == before
    missing = requests.delete(f"{jobs_url}/webhooks/wh-missing", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "webhook_not_found"
