"""Stored API keys on a web of the session's stack: keys made with ``python -m config.keys`` and ``/admin/keys``,
a scope missing (403 naming it), expiry and revoke (401), rotation, quotas (429 naming the quota), rate limits
per key, the audit log of admin actions, the start-up refusal on a public address without keys. Every secret is
remembered (``tests.used_keys``): none may be in any log of the session when it ends (conftest checks).

The keys live in the session's MongoDB, so while this module runs every web of the session needs a key; at its end
every key it made is revoked and the session's web is open again before the next module starts."""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass

import pytest
import requests

from tests.conftest import CHAT_MODEL, ask
from tests.stack import PYTHON, ROOT, Service, Stack, free_port, wait_until
from tests.used_keys import USED, remember

MADE: list[str] = []
"""Names of the keys this module made, revoked at its end."""
LIMITS = {"API_KEY_CACHE_SECONDS": "1", "RATE_LIMITS_ENABLED": "true", "RATE_LIMIT_RAG": "3/minute"}


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "config.keys", *args],
        cwd=ROOT,
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def secret_in(output: str) -> str:
    found = re.search(r"secret \(shown once, store it now\): (\S+)", output)
    assert found, output
    remember(found.group(1))
    return found.group(1)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Keyed:
    url: str
    admin: str
    service: Service

    def create(self, name: str, scopes: list[str], **extra) -> dict:
        answer = requests.post(
            f"{self.url}/admin/keys",
            json={"name": name, "scopes": scopes, **extra},
            headers=bearer(self.admin),
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        MADE.append(name)
        remember(answer.json()["secret"])
        return answer.json()

    def chat(self, secret: str, **extra) -> requests.Response:
        body = {"model": CHAT_MODEL, "messages": ask("Hi"), "max_tokens": 2, **extra}
        return requests.post(f"{self.url}/v1/chat/completions", json=body, headers=bearer(secret), timeout=60)


def refused(answer: requests.Response, status: int, code: str) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code, error
    return error


@pytest.fixture(scope="module")
def keyed(stack, supervisor, control_worker, base_url):
    made = cli(stack, "create", "--name", "kt-admin", "--scopes", "admin")
    assert made.returncode == 0, made.stderr
    admin = secret_in(made.stdout)
    service, url = stack.start_web("web-stored-keys", LIMITS)
    yield Keyed(url, admin, service)
    for name in MADE:
        requests.delete(f"{url}/admin/keys/{name}", headers=bearer(admin), timeout=10)
    assert cli(stack, "revoke", "kt-admin").returncode == 0
    wait_until(lambda: requests.get(f"{base_url}/v1/models", timeout=5).ok, 30, "the session's web to be open again")


def test_keys_made_with_the_command_line_and_the_admin_routes(keyed, stack):
    listed = requests.get(f"{keyed.url}/admin/keys", headers=bearer(keyed.admin), timeout=10)
    assert listed.status_code == 200
    (admin,) = [key for key in listed.json()["keys"] if key["name"] == "kt-admin"]
    assert admin["id"].startswith("key_") and admin["scopes"] == ["admin"] and admin["state"] == "active"
    assert "secret" not in admin and "secret_hash" not in admin
    assert admin["last_used_at"] is not None, "the request just made counts as a use"

    alice = keyed.create("kt-alice", ["inference", "jobs"])
    assert alice["secret"].startswith("mlxf-") and len(alice["secret"]) > 40
    assert keyed.chat(alice["secret"]).status_code == 200
    again = requests.post(
        f"{keyed.url}/admin/keys",
        json={"name": "kt-alice", "scopes": ["read"]},
        headers=bearer(keyed.admin),
        timeout=10,
    )
    refused(again, 409, "key_exists")
    bad = requests.post(
        f"{keyed.url}/admin/keys", json={"name": "kt-x", "scopes": ["root"]}, headers=bearer(keyed.admin), timeout=10
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("scopes")

    shown = cli(stack, "list")
    assert shown.returncode == 0 and "kt-alice" in shown.stdout and "kt-admin" in shown.stdout
    assert not any(secret in shown.stdout for secret in USED)
    refused(requests.get(f"{keyed.url}/v1/models", timeout=10), 401, "missing_api_key")
    assert refused(
        requests.get(f"{keyed.url}/v1/models", headers=bearer("mlxf-nope"), timeout=10), 401, "invalid_api_key"
    )


def test_a_key_without_the_routes_scope_is_403_naming_it(keyed):
    user = keyed.create("kt-user", ["inference", "jobs"])["secret"]
    reader = keyed.create("kt-reader", ["read"])["secret"]
    cases = [
        (user, "POST", "/api/rag/query", {"query": "q", "collection": "c"}, "rag"),
        (user, "POST", "/v1/models/load", {"model_path": "x"}, "admin"),
        (user, "GET", "/internal/diagnostics", None, "admin"),
        (user, "GET", "/admin/keys", None, "admin"),
        (reader, "POST", "/api/mcp/jobs", {}, "jobs"),
        (reader, "POST", "/v1/chat/completions", {}, "inference"),
        (reader, "GET", "/admin/audit", None, "admin"),
    ]
    for secret, method, path, body, scope in cases:
        answer = requests.request(method, f"{keyed.url}{path}", json=body, headers=bearer(secret), timeout=10)
        error = refused(answer, 403, "insufficient_scope")
        assert error["type"] == "permission_error" and f"'{scope}'" in error["message"], (path, error)
    for path in ("/v1/models", "/api/mcp/jobs", "/api/rag/collections", "/api/fusion/workflows"):
        assert requests.get(f"{keyed.url}{path}", headers=bearer(reader), timeout=10).status_code == 200, path
    assert requests.get(f"{keyed.url}/api/mcp/jobs", headers=bearer(user), timeout=10).status_code == 200


def test_expired_and_revoked_keys_are_401(keyed, stack):
    brief = keyed.create("kt-brief", ["inference"], expires_in_days=2 / 86400)["secret"]
    assert keyed.chat(brief).status_code == 200
    wait_until(lambda: keyed.chat(brief).status_code == 401, 10, "the key to expire")
    error = refused(keyed.chat(brief), 401, "expired_api_key")
    assert error["type"] == "authentication_error" and "kt-brief" in error["message"]

    revoked = keyed.create("kt-revoked", ["inference"])
    assert keyed.chat(revoked["secret"]).status_code == 200
    answer = requests.delete(f"{keyed.url}/admin/keys/{revoked['id']}", headers=bearer(keyed.admin), timeout=10)
    assert answer.status_code == 200 and answer.json()["state"] == "revoked"
    refused(keyed.chat(revoked["secret"]), 401, "invalid_api_key")

    by_cli = keyed.create("kt-cli-revoked", ["inference"])["secret"]
    assert keyed.chat(by_cli).status_code == 200
    assert cli(stack, "revoke", "kt-cli-revoked").returncode == 0
    wait_until(lambda: keyed.chat(by_cli).status_code == 401, 10, "the revoke to reach the web (API_KEY_CACHE_SECONDS)")
    missing = requests.delete(f"{keyed.url}/admin/keys/kt-none", headers=bearer(keyed.admin), timeout=10)
    refused(missing, 404, "key_not_found")


def test_rotation_keeps_the_key_and_changes_its_secret(keyed, stack):
    made = keyed.create("kt-rotated", ["inference"])
    rotated = requests.post(f"{keyed.url}/admin/keys/kt-rotated/rotate", headers=bearer(keyed.admin), timeout=10)
    assert rotated.status_code == 200 and rotated.json()["id"] == made["id"]
    remember(rotated.json()["secret"])
    refused(keyed.chat(made["secret"]), 401, "invalid_api_key")
    assert keyed.chat(rotated.json()["secret"]).status_code == 200

    again = cli(stack, "rotate", "kt-rotated")
    assert again.returncode == 0 and made["id"] in again.stdout
    newest = secret_in(again.stdout)
    wait_until(lambda: keyed.chat(newest).status_code == 200, 10, "the rotated secret to work")
    wait_until(lambda: keyed.chat(rotated.json()["secret"]).status_code == 401, 10, "the old secret to stop")


def test_quotas_answer_429_naming_the_quota(keyed, hold):
    tokens = keyed.create("kt-tokens", ["inference"], quotas={"tokens_per_day": 1})["secret"]
    assert keyed.chat(tokens).status_code == 200, "the answer that crosses the quota is served"
    answer = keyed.chat(tokens)
    error = refused(answer, 429, "quota_exceeded")
    assert error["param"] == "tokens_per_day" and "tokens_per_day" in error["message"]
    assert 0 < int(answer.headers["Retry-After"]) <= 86401

    streams = keyed.create("kt-streams", ["inference"], quotas={"concurrent_streams": 1})["secret"]
    held = hold("stream-quota")
    first = requests.post(
        f"{keyed.url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": ask("Count"), "max_tokens": 50, "stream": True},
        headers={**bearer(streams), "X-Request-ID": held.request_id},
        stream=True,
        timeout=60,
    )
    assert first.status_code == 200
    held.wait_held()
    second = keyed.chat(streams, stream=True)
    assert refused(second, 429, "quota_exceeded")["param"] == "concurrent_streams"
    assert int(second.headers["Retry-After"]) > 0
    held.release()
    assert first.text.rstrip().endswith("data: [DONE]")
    wait_until(lambda: keyed.chat(streams, stream=True).status_code == 200, 10, "the stream's slot to free")

    jobs = keyed.create("kt-jobs", ["jobs"], quotas={"queued_jobs": 1})["secret"]
    blocker = hold("job-quota")
    body = {"model_id": CHAT_MODEL, "operation": "chat", "input": {"messages": ask("Hi"), "max_tokens": 5}}
    headers = {**bearer(jobs), "X-Request-ID": blocker.request_id}
    submitted = requests.post(f"{keyed.url}/api/mcp/jobs", json=body, headers=headers, timeout=30)
    assert submitted.status_code == 202
    over = requests.post(f"{keyed.url}/api/mcp/jobs", json=body, headers=bearer(jobs), timeout=30)
    assert refused(over, 429, "quota_exceeded")["param"] == "queued_jobs"
    blocker.release()
    job_url = f"{keyed.url}/api/mcp/jobs/{submitted.json()['job_id']}"
    done = lambda: requests.get(job_url, headers=bearer(jobs), timeout=30).json()["status"] == "completed"  # noqa: E731
    wait_until(done, 60, "the key's job")

    usage = requests.get(f"{keyed.url}/admin/usage", headers=bearer(keyed.admin), timeout=30).json()["keys"]
    (row,) = [key for key in usage if key["name"] == "kt-tokens"]
    assert row["tokens_today"] >= 1 and row["requests"] >= 2 and row["quotas"] == {"tokens_per_day": 1}
    (by_job,) = [key for key in usage if key["name"] == "kt-jobs"]
    assert by_job["tokens_today"] >= 1, "a job's tokens count for the key that submitted it"

    workflow = f"kt_one_call_{int(time.time())}"
    step = {"step_id": "say", "type": "model_call", "model_id": CHAT_MODEL, "operation": "chat", "input": "Hi"}
    composed = requests.post(
        f"{keyed.url}/api/fusion/compose",
        json={"name": workflow, "steps": [step]},
        headers=bearer(keyed.admin),
        timeout=30,
    )
    assert composed.status_code == 201, composed.text
    runner = keyed.create("kt-workflow", ["inference"])["secret"]
    ran = requests.post(
        f"{keyed.url}/api/fusion/orchestrate",
        json={"workflow": workflow, "input": {}, "config": {"max_tokens": 2, "temperature": 0}},
        headers=bearer(runner),
        timeout=120,
    )
    assert ran.status_code == 200, ran.text
    usage = requests.get(f"{keyed.url}/admin/usage", headers=bearer(keyed.admin), timeout=30).json()["keys"]
    (by_workflow,) = [key for key in usage if key["name"] == "kt-workflow"]
    assert by_workflow["tokens_today"] >= 1, "a workflow's model calls count for the key that runs it"
    metrics = requests.get(f"{keyed.url}/metrics", timeout=10).text
    assert re.search(r'mlx_key_tokens_total\{key="kt-tokens"\} [1-9]', metrics), metrics[-2000:]


def test_rate_limits_count_per_key_reads_apart_from_writes(keyed):
    first = keyed.create("kt-rag-one", ["rag"])["secret"]
    second = keyed.create("kt-rag-two", ["rag"])["secret"]
    reads = [requests.get(f"{keyed.url}/api/rag/collections", headers=bearer(first), timeout=10) for _ in range(4)]
    assert [answer.status_code for answer in reads] == [200, 200, 200, 429]
    assert requests.get(f"{keyed.url}/api/rag/collections", headers=bearer(second), timeout=10).status_code == 200
    write = requests.post(
        f"{keyed.url}/api/rag/query", json={"query": "q", "collection": "kt-none"}, headers=bearer(first), timeout=30
    )
    assert write.status_code != 429 and write.headers["X-RateLimit-Remaining"] == "2"


def test_admin_actions_and_key_changes_are_audited(keyed):
    user = keyed.create("kt-audited", ["inference"])["secret"]
    requests.post(f"{keyed.url}/v1/models/load", json={"model_path": "x"}, headers=bearer(user), timeout=10)
    requests.get(f"{keyed.url}/internal/diagnostics", headers=bearer(keyed.admin), timeout=30)

    def entries(**query) -> list[dict]:
        answer = requests.get(f"{keyed.url}/admin/audit", params=query, headers=bearer(keyed.admin), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()["entries"]

    made = entries(key="kt-admin", action="keys.create")
    assert any(entry["target"] == "kt-audited" and entry["status"] == 201 for entry in made)
    assert all(entry["remote"] == "127.0.0.1" and entry["actor_id"].startswith("key_") for entry in made)
    (refusal,) = entries(key="kt-audited")
    assert refusal["action"] == "POST /v1/models/load" and refusal["status"] == 403
    assert entries(key="kt-admin", action="GET /internal/diagnostics")[0]["status"] in (200, 503)
    from_cli = entries(action="keys.create", limit=1000)
    assert any(entry["actor"].startswith("cli:") and entry["target"] == "kt-admin" for entry in from_cli)
    assert entries(key="kt-admin", limit=1)[0]["action"] == "GET /admin/audit", "newest first"
    assert entries(since="2100-01-01T00:00:00Z") == []
    everything = requests.get(f"{keyed.url}/admin/audit?limit=1000", headers=bearer(keyed.admin), timeout=10).text
    assert not any(secret in everything for secret in USED)


def test_a_public_address_without_keys_refuses_to_start(stack):
    no_keys = stack.env["MONGODB_URL"].rsplit("/", 1)[0] + "/mlxf_no_keys"
    port = str(free_port())
    gunicorn = [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "web/gunicorn_conf.py", "web:create_app()"]
    env = {"SERVER_HOST": "0.0.0.0", "SERVER_PORT": port, "MONGODB_URL": no_keys}
    service = stack.start("web-public-refused", gunicorn, env)
    assert service.process.wait(60) == 78
    log = service.log()
    assert "refusing to listen on 0.0.0.0" in log and "python -m config.keys create" in log and "API_KEYS=" in log

    allowed = {"SERVER_HOST": "0.0.0.0", "MONGODB_URL": no_keys, "ALLOW_UNAUTHENTICATED": "true"}
    _allowed, url = stack.start_web("web-public-allowed", allowed)
    assert requests.get(f"{url}/openapi.json", timeout=10).ok
