"""Section 5: jobs with tiny outputs through the job API, and webhook delivery to a local receiver."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import requests

from bench import progress
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL
from bench.report import SectionResult, Table
from bench.stats import percentile
from bench.webhook_receiver import WebhookReceiver

NAME = "jobs"
TITLE = "Jobs and webhooks (tiny outputs)"
SECRET = "bench-secret"


class JobsUnavailable(Exception):
    """The job API is not served by this version of the platform."""


def parse_time(value: str | None) -> float | None:
    """Seconds since the epoch of an ISO 8601 time (``Z`` or an offset; naive means UTC)."""
    if not value:
        return None
    moment = dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def register_webhook(base_url: str, url: str) -> str:
    """Subscribes ``url`` to ``job.completed``; raises ``JobsUnavailable`` on 404 or 405."""
    response = requests.post(
        f"{base_url}/api/mcp/webhooks",
        json={"url": url, "events": ["job.completed"], "secret": SECRET},
        timeout=30,
    )
    if response.status_code in (404, 405):
        raise JobsUnavailable(f"POST /api/mcp/webhooks answered {response.status_code}")
    response.raise_for_status()
    return response.json().get("webhook_id", "")


def submit_all(base_url: str, count: int, submitters: int) -> tuple[dict[str, float], float, list[str]]:
    """Submits ``count`` chat jobs from ``submitters`` threads; job id -> submit time, wall seconds, errors."""
    submitted: dict[str, float] = {}
    errors: list[str] = []
    lock = threading.Lock()
    numbers = iter(range(count))

    def submitter() -> None:
        session = requests.Session()
        while True:
            with lock:
                number = next(numbers, None)
            if number is None:
                return
            body = {
                "model_id": CHAT_MODEL,
                "operation": "chat",
                "input": {"messages": [{"role": "user", "content": f"Say OK ({number})"}], "max_tokens": 2},
            }
            sent = time.time()
            response = session.post(f"{base_url}/api/mcp/jobs", json=body, timeout=60)
            with lock:
                if response.status_code in (404, 405) and not submitted:
                    errors.append(f"unavailable: POST /api/mcp/jobs answered {response.status_code}")
                    return
                if response.status_code == 202:
                    submitted[response.json()["job_id"]] = sent
                else:
                    errors.append(f"{response.status_code}: {response.text[:200]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return submitted, time.perf_counter() - started, errors


def fetch_jobs(base_url: str, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each job's record from ``GET /api/mcp/jobs/{id}``."""
    session = requests.Session()
    return {job_id: session.get(f"{base_url}/api/mcp/jobs/{job_id}", timeout=30).json() for job_id in job_ids}


def run(context: BenchContext) -> SectionResult:
    """Registers a webhook, submits the jobs, waits for their webhooks, reads their completion times."""
    options = context.options
    result = SectionResult(NAME, TITLE)
    base_url = context.platform().base_url
    with WebhookReceiver() as receiver:
        try:
            webhook_id = register_webhook(base_url, receiver.url)
        except JobsUnavailable as exc:
            result.skipped = f"jobs API not available ({exc})"
            return result
        progress.say(f"submitting {options.jobs} jobs from {options.job_submitters} threads")
        submitted, submit_wall, errors = submit_all(base_url, options.jobs, options.job_submitters)
        if not submitted and any(e.startswith("unavailable") for e in errors):
            result.skipped = f"jobs API not available ({errors[0]})"
            return result
        timeout = 60 + 5 * len(submitted)
        progress.say(f"waiting for {len(submitted)} webhooks (at most {timeout}s)")
        missing = receiver.wait_for(set(submitted), timeout)
        arrivals = dict(receiver.arrivals)
        unmatched = receiver.unmatched
    requests.delete(f"{base_url}/api/mcp/webhooks/{webhook_id}", timeout=30)
    records = fetch_jobs(base_url, list(submitted))
    completed = {job_id: parse_time(job.get("completed_at")) for job_id, job in records.items()}
    done = {job_id: at for job_id, at in completed.items() if at is not None}
    delivery = [arrivals[j][0] - at for j, at in done.items() if j in arrivals]
    end_to_end = [arrivals[j][0] - sent for j, sent in submitted.items() if j in arrivals]
    first_submit = min(submitted.values(), default=0.0)
    last_completion = max(done.values(), default=first_submit)
    table = Table(
        f"{len(submitted)} chat jobs (max_tokens 2) on {CHAT_MODEL}, submitted from {options.job_submitters} threads",
        [
            "jobs",
            "accepted/s",
            "completed/s",
            "webhook latency p50 ms",
            "webhook latency p95 ms",
            "submit to webhook p50 s",
            "submit to webhook p95 s",
            "errors",
            "webhooks missing",
        ],
    )
    table.rows.append(
        [
            len(submitted),
            len(submitted) / submit_wall if submit_wall else None,
            len(done) / (last_completion - first_submit) if last_completion > first_submit else None,
            _ms(percentile(delivery, 50)),
            _ms(percentile(delivery, 95)),
            percentile(end_to_end, 50),
            percentile(end_to_end, 95),
            len(errors),
            len(missing),
        ]
    )
    result.tables.append(table)
    result.notes.append(
        "webhook latency: from the job's completed_at (GET /api/mcp/jobs/{id}) to receipt at a receiver in the "
        "bench process; completed/s: completed jobs over first submission to last completed_at"
    )
    if errors:
        result.notes.append(f"first submission error: {errors[0]}")
    if unmatched:
        result.notes.append(f"{unmatched} webhook(s) carried no job_id")
    result.raw = {
        "submitted": submitted,
        "submit_wall_s": submit_wall,
        "completed_at": completed,
        "arrivals": {job_id: at for job_id, (at, _event, _body) in arrivals.items()},
        "errors": errors,
        "missing": sorted(missing),
        "statuses": {job_id: job.get("status") for job_id, job in records.items()},
    }
    return result


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000 if seconds is not None else None
