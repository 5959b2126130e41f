"""Models on demand: an on-demand catalog model is listed as available without being loaded, is loaded by the
first request that names it (concurrent first requests wait on one load), and is unloaded after its idle time.
The session's catalog has one (``ON_DEMAND_MODEL``, idle after 4 s: conftest)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import ON_DEMAND_MODEL, ask, submit_job, wait_for_job
from tests.stack import Service, wait_until


def status_of(base_url: str) -> str:
    return requests.get(f"{base_url}/v1/models/{ON_DEMAND_MODEL}", timeout=10).json()["status"]


def chat(base_url: str, text: str) -> requests.Response:
    body = {"model": ON_DEMAND_MODEL, "messages": ask(text), "max_tokens": 4, "temperature": 0}
    return requests.post(f"{base_url}/v1/chat/completions", json=body, timeout=200)


def test_an_on_demand_model_loads_on_first_request_once_and_unloads_when_idle(base_url, jobs_url, supervisor: Service):
    listed = {m["id"]: m for m in requests.get(f"{base_url}/v1/models", timeout=10).json()["data"]}
    assert listed[ON_DEMAND_MODEL]["status"] == "available" and "on-demand" in listed[ON_DEMAND_MODEL]["tags"]
    starts_before = supervisor.log().count(f"started a worker for {ON_DEMAND_MODEL}")

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda text: chat(base_url, text), ["Say hi.", "Say yes.", "Say no."]))
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    assert all(a.json()["model"] == ON_DEMAND_MODEL for a in answers)
    assert supervisor.log().count(f"started a worker for {ON_DEMAND_MODEL}") == starts_before + 1, "one load"

    wait_until(lambda: status_of(base_url) == "available", 60, "the idle on-demand model to be unloaded")
    assert f"unloading the on-demand model {ON_DEMAND_MODEL}: no request for" in supervisor.log()
    job = submit_job(jobs_url, ON_DEMAND_MODEL, "chat", {"messages": ask("Again."), "max_tokens": 4})
    assert job.status_code == 202, job.text
    assert wait_for_job(jobs_url, job.json()["job_id"])["status"] == "completed", "a job loads it again"
