"""Listing jobs: filters by status and model, pagination, sort and order, and invalid parameters."""

from __future__ import annotations

import requests

from tests.conftest import EMBEDDING_MODEL, submit_job, wait_for_job


def listing(jobs_url: str, **params) -> requests.Response:
    return requests.get(f"{jobs_url}/jobs", params=params, timeout=10)


def test_filters_pagination_and_order(jobs_url):
    ids = []
    for index in range(4):
        response = submit_job(jobs_url, EMBEDDING_MODEL, "embed", {"input": f"text {index}"})
        assert response.status_code == 202
        ids.append(response.json()["job_id"])
    for job_id in ids:
        wait_for_job(jobs_url, job_id)

    mine = listing(jobs_url, model_id=EMBEDDING_MODEL, status="completed", limit=1000).json()
    listed = [job["job_id"] for job in mine["jobs"]]
    assert set(ids) <= set(listed)
    assert all(job["model_id"] == EMBEDDING_MODEL and job["status"] == "completed" for job in mine["jobs"])
    assert mine["total"] == len(listed) and mine["limit"] == 1000 and mine["offset"] == 0
    newest_first = [job_id for job_id in listed if job_id in ids]
    assert newest_first == list(reversed(ids))

    oldest_first = listing(jobs_url, model_id=EMBEDDING_MODEL, order="asc", sort_by="completed_at", limit=1000).json()
    completed_at = [job["completed_at"] for job in oldest_first["jobs"] if "completed_at" in job]
    assert completed_at == sorted(completed_at)

    page_one = listing(jobs_url, model_id=EMBEDDING_MODEL, limit=2, offset=0).json()
    page_two = listing(jobs_url, model_id=EMBEDDING_MODEL, limit=2, offset=2).json()
    assert len(page_one["jobs"]) == 2 and len(page_two["jobs"]) == 2
    assert not {j["job_id"] for j in page_one["jobs"]} & {j["job_id"] for j in page_two["jobs"]}
    assert page_one["total"] == page_two["total"] >= 4
    first = page_one["jobs"][0]
    assert {"job_id", "status", "model_id", "operation", "created_at", "latency_ms"} <= set(first)
    assert "result" not in first  # the list stays small; GET /jobs/{id} has the result

    empty = listing(jobs_url, status="queued", model_id="no/such-model")
    assert empty.json()["jobs"] == [] and empty.json()["total"] == 0 and empty.json()["limit"] == 100
    assert empty.json()["request_id"] == empty.headers["X-Request-ID"]


def test_invalid_list_parameters_name_the_parameter(jobs_url):
    for params, param in (
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10**20}, "offset"),
        ({"status": "sleeping"}, "status"),
        ({"sort_by": "model_id"}, "sort_by"),
        ({"order": "sideways"}, "order"),
    ):
        response = listing(jobs_url, **params)
        assert response.status_code == 400, params
        assert response.json()["error"]["param"] == param
