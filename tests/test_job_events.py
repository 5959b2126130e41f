"""Following a job without polling: its events as server-sent events (each with its id, then the final state;
resumed with ``Last-Event-ID``), and a read that waits (``?wait=N``) until the job changes. The running job is held
between two tokens (``hold``), so each event happens when the test lets it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import CHAT_MODEL, ask, submit_job

SHORT = {"messages": ask("Say hi."), "max_tokens": 3, "temperature": 0}


def sse_events(response: requests.Response) -> Iterator[dict]:
    """Each event of a stream as ``{"id", "event", "data"}``; comments (keep-alives) are skipped."""
    event: dict = {}
    for line in response.iter_lines(decode_unicode=True):
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


def events_of(jobs_url: str, job_id: str, last_event_id: str | None = None) -> requests.Response:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    return requests.get(f"{jobs_url}/jobs/{job_id}/events", headers=headers, stream=True, timeout=60)


def test_a_jobs_events_stream_as_they_happen_and_resume_after_the_last_one_seen(jobs_url, hold):
    held = hold("job-events")
    accepted = submit_job(jobs_url, CHAT_MODEL, "chat", SHORT, request_id=held.request_id)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    held.wait_held()

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(requests.get, f"{jobs_url}/jobs/{job_id}", params={"wait": 50}, timeout=60)
        stream = events_of(jobs_url, job_id)
        assert stream.status_code == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(stream)
        queued, processing = next(events), next(events)
        assert [queued["event"], processing["event"]] == ["job.queued", "job.processing"]
        assert (
            processing["data"]["job"]["status"] == "processing" and processing["id"] == processing["data"]["event_id"]
        )
        assert not waiting.done()  # nothing has changed since the wait began
        held.release()
        completed, final = next(events), next(events)
        changed = waiting.result()
    assert completed["event"] == "job.completed"
    assert final["event"] == "job.final" and final["id"] == f"{job_id}.final"
    assert final["data"]["job"]["status"] == "completed" and final["data"]["job"]["result"]["content"]
    assert list(events) == []  # the stream ends after the final state
    assert changed.status_code == 200 and changed.json()["status"] == "completed"

    resumed = list(sse_events(events_of(jobs_url, job_id, last_event_id=processing["id"])))
    assert [event["event"] for event in resumed] == ["job.completed", "job.final"]
    assert events_of(jobs_url, job_id, last_event_id=final["id"]).status_code == 204

    finished = requests.get(f"{jobs_url}/jobs/{job_id}", params={"wait": 50}, timeout=10)  # answers at once
    assert finished.json()["status"] == "completed"


def test_a_wait_is_bounded_and_an_unknown_job_is_404(jobs_url):
    too_long = requests.get(f"{jobs_url}/jobs/job-unknown", params={"wait": 61}, timeout=10)
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "wait"
    for path in ("/jobs/job-unknown?wait=5", "/jobs/job-unknown/events"):
        assert requests.get(f"{jobs_url}{path}", timeout=10).status_code == 404
