"""Schemathesis over the whole OpenAPI document, against the session's stack: no server error, and every answer
(status, content type, body) as the document says.

Bounded: a few examples per operation and a fixed seed, every phase (coverage, fuzzing, stateful). The hooks in
``tests/fuzz_hooks.py`` keep the session's models loaded and cap what a valid request may cost a model; they
change no route, field or check.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import requests

from tests.stack import PYTHON, ROOT

CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
EXAMPLES = 15
SEED = 20261126


CONFIG = """
[checks.not_a_server_error]
# 503 is the documented answer of a model without a worker (one another test left failed, say), naming it: a
# state of the deployment, not a server error. Every other 5xx fails the run.
expected-statuses = ["2xx", "3xx", "4xx", "503"]
"""


def test_schemathesis_finds_no_server_error_and_no_answer_off_the_document(base_url: str, tmp_path: Path):
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
        str(EXAMPLES),
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
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks", "PYTHONPATH": str(ROOT)}
    # In a folder of its own: schemathesis keeps a cache of past crashes where it runs, and replays them.
    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    operations = sum(
        method in ("get", "post", "put", "patch", "delete")
        for path in requests.get(f"{base_url}/openapi.json", timeout=10).json()["paths"].values()
        for method in path
    )
    assert f"Selected: {operations}/{operations}" in run.stdout and f"Tested: {operations}" in run.stdout
