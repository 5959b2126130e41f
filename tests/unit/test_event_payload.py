"""A delivery's body is the stored event's snapshot, with a completed job's result only while it stays bounded."""

from __future__ import annotations

import json

from tasks.job_store import Job, now
from tasks.webhooks import event_payload


def completed_job(result: dict) -> tuple[Job, dict]:
    job = Job(job_id="job-1", model_id="m", operation="chat", status="completed", created_at=now(), result=result)
    entry = {"event_id": "job-1.job.completed", "event": "job.completed", "at": now(), "job": job.public(False)}
    return job, entry


def test_a_small_result_goes_in_the_payload():
    job, entry = completed_job({"content": "Paris"})
    payload = json.loads(event_payload(job, entry, 10_000))
    assert payload["event"] == "job.completed" and payload["job"]["result"] == {"content": "Paris"}


def test_a_huge_result_is_left_out_and_the_body_stays_under_the_bound():
    job, entry = completed_job({"content": "x" * 50_000})
    body = event_payload(job, entry, 4_096)
    payload = json.loads(body)
    assert len(body.encode()) <= 4_096
    assert "result" not in payload["job"] and "read it from the job" in payload["job"]["result_omitted"]
    assert payload["job"]["job_id"] == "job-1" and payload["job"]["status"] == "completed"


def test_other_events_carry_their_snapshot_not_the_current_job():
    job, entry = completed_job({"content": "Paris"})
    entry = {**entry, "event": "job.processing", "job": {**entry["job"], "status": "processing"}}
    payload = json.loads(event_payload(job, entry, 10_000))
    assert payload["job"]["status"] == "processing" and "result" not in payload["job"]


def test_huge_metadata_or_error_cannot_make_the_body_unbounded():
    job, entry = completed_job({"content": "Paris"})
    entry = {**entry, "job": {**entry["job"], "metadata": {"note": "y" * 50_000}, "error": "z" * 50_000}}
    body = event_payload(job, entry, 4_096)
    payload = json.loads(body)
    assert len(body.encode()) <= 4_096 and payload["job"]["truncated"] is True
    assert payload["job"]["job_id"] == "job-1"
