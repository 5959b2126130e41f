"""Schemathesis over the whole OpenAPI document, against the session's stack: no server error, and every answer
(status, content type, body) as the document says.

Bounded: a few examples per operation and a fixed seed, every phase (coverage, fuzzing, stateful). The hooks in
``tests/fuzz_hooks.py`` keep the session's models loaded and cap what a valid request may cost a model; they
change no route, field or check.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import BASH_INGEST
from tests.stack import PYTHON, ROOT, wait_until
from tests.used_keys import remember

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
EXAMPLES = 15
SEED = 20261126
ADMIN = remember("sk-fuzz-admin-8d2f61")
USER_SCOPES = ["inference", "jobs", "rag", "batches"]
USER_KEY_EXAMPLES = 5
"""Fewer examples with a user key: what that run adds is the refusals (403, 404), not more bodies."""


CONFIG = """
[checks.not_a_server_error]
# 503 is the documented answer of a model without a worker (one another test left failed, say), naming it: a
# state of the deployment, not a server error. Every other 5xx fails the run.
expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


def run_schemathesis(
    session: pytest.Config, base_url: str, tmp_path: Path, *extra: str, examples: int = EXAMPLES
) -> subprocess.CompletedProcess:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [
        str(Path(PYTHON).with_name("st")),
        "--config-file",
        str(config),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(examples),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--suppress-health-check",
        "filter_too_much",
        "--no-color",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        *extra,
    ]
    bash = session.stash.get(BASH_INGEST, None)  # its collection, and its job if it still runs
    keep = f"{bash['collection']},{bash['job_id']}" if bash else ""
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(ROOT), "FUZZ_KEEP": keep}
    # In a folder of its own: schemathesis keeps a cache of past crashes where it runs, and replays them.
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    operations = sum(
        method in ("get", "post", "put", "patch", "delete")
        for path in requests.get(f"{base_url}/openapi.json", timeout=10).json()["paths"].values()
        for method in path
    )
    assert f"Selected: {operations}/{operations}" in run.stdout and f"Tested: {operations}" in run.stdout
    return run


REVOKE_EVERY_KEY = """
from config import keys, mongo
from config.settings import Settings

mongo.connect(Settings.from_env())
for key in keys.all_keys():
    if key.revoked_at is None:
        keys.revoke(key.key_id)
"""


@pytest.fixture()
def no_key_left(base_url: str) -> Iterator[None]:
    """Every key the run made is revoked (the hooks revoke each at once; this is the net under them)."""
    yield
    subprocess.run([PYTHON, "-c", REVOKE_EVERY_KEY], cwd=ROOT, env=os.environ, check=True, timeout=60)
    wait_until(lambda: requests.get(f"{base_url}/v1/models", timeout=5).ok, 30, "the session's web open again")


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(
    request: pytest.FixtureRequest, base_url: str, tmp_path: Path, no_key_left: None
):
    run_schemathesis(request.config, base_url, tmp_path)


@pytest.fixture()
def user_key(stack, supervisor, control_worker, base_url) -> Iterator[tuple[str, str]]:
    """A web with an admin key and a stored user key (no ``admin``, no ``read``): the web's URL and the user's
    secret. While the key is stored every web of the session needs one; it is revoked at the end."""
    _service, keyed = stack.start_web("web-fuzz-keys", {"API_KEYS": ADMIN})
    admin = {"Authorization": f"Bearer {ADMIN}"}
    made = requests.post(
        f"{keyed}/admin/keys", json={"name": f"fuzz-{uuid.uuid4().hex[:6]}", "scopes": USER_SCOPES}, headers=admin
    )
    assert made.status_code == 201, made.text
    try:
        yield keyed, remember(made.json()["secret"])
    finally:
        requests.delete(f"{keyed}/admin/keys/{made.json()['id']}", headers=admin, timeout=10)
        wait_until(lambda: requests.get(f"{base_url}/v1/models", timeout=5).ok, 30, "the session's web open again")


def test_schemathesis_with_a_user_key_finds_no_server_error_and_every_refusal_documented(
    request: pytest.FixtureRequest, user_key: tuple[str, str], tmp_path: Path
):
    """Admin routes answer 403 naming the scope, other keys' objects 404: each in the error envelope the
    document gives for it (``response_schema_conformance``), never a 500."""
    keyed, secret = user_key
    authorization = f"Authorization: Bearer {secret}"
    run_schemathesis(request.config, keyed, tmp_path, "--header", authorization, examples=USER_KEY_EXAMPLES)
