"""A person or a script uses the platform from a terminal with ``mlxf``: models, chat, jobs, RAG and batches
against the session's API, through click's runner in the test process, and as ``python -m mlxf`` in a terminal
(a pseudo-terminal) for the interactive chat."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import uuid

import pytest
from click.testing import CliRunner

from mlxf.cli import cli
from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR, EMBEDDING_MODEL, submit_job
from tests.stack import PYTHON, ROOT, link_tree

FESTIVAL = (
    "The Lumen Festival of light art was founded by the engineer Ida Brenn in the harbour town of Velmar. "
    "Every October its lanterns float on the canals for nine nights."
)


@pytest.fixture()
def mlxf(base_url, control_worker):
    """``mlxf(*args)``: the command's result (exit code, output) against the session's API (``MLXF_URL``)."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, list(args), env={"MLXF_URL": base_url, "MLXF_API_KEY": ""}, catch_exceptions=False)

    return invoke


def test_models_and_what_load_unload_and_pull_refuse(mlxf, tmp_path):
    """A real load and unload take 20 s on this machine (a worker started, warmed up and stopped; the lifecycle is
    tested in test_model_lifecycle.py): here the commands' requests reach the API, which names what it refuses."""
    listed = mlxf("models")
    assert listed.exit_code == 0 and CHAT_MODEL in listed.output and EMBEDDING_MODEL in listed.output
    as_json = json.loads(mlxf("models", "--type", "lm", "--json").output)
    assert CHAT_MODEL in {m["id"] for m in as_json["data"]} and {m["type"] for m in as_json["data"]} == {"lm"}

    outside = mlxf("load", str(link_tree(CHAT_MODEL_DIR, tmp_path / "chat")), "--id", "cli/outside-the-roots")
    assert outside.exit_code == 1 and "400 invalid_model_path" in outside.output, outside.output
    assert "(param: model_path)" in outside.output
    missing = mlxf("unload", "no/such-model")
    assert missing.exit_code == 1 and "404 model_not_found" in missing.output, missing.output
    bad_repo = mlxf("pull", "not-a-repo-id")
    assert bad_repo.exit_code == 2 and "REPO_ID" in bad_repo.output


def test_chat_one_answer_and_a_conversation_in_a_terminal(mlxf, base_url):
    answered = json.loads(mlxf("--json", "chat", CHAT_MODEL, "Hi", "--max-tokens", "3").output)
    assert answered["choices"][0]["message"]["content"] and answered["usage"]["completion_tokens"] <= 3

    terminal, child = pty.openpty()
    env = {**os.environ, "MLXF_URL": base_url, "COLUMNS": "120"}
    process = subprocess.Popen(
        [PYTHON, "-m", "mlxf", "chat", CHAT_MODEL, "--max-tokens", "3", "--verbose"],
        cwd=ROOT,
        env=env,
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    try:
        assert read_until(terminal, b">>> ").endswith(b">>> ")
        os.write(terminal, b"What is the capital of France?\n")
        turn = read_until(terminal, b">>> ")
        assert b"generated in" in turn and b"tokens/s" in turn, turn  # the answer, then its figures, then a prompt
        os.write(terminal, b"/bye\n")
        assert process.wait(20) == 0
    finally:
        process.kill()
        os.close(terminal)


def read_until(terminal: int, marker: bytes, timeout: float = 60) -> bytes:
    """What the terminal shows until ``marker`` (after whatever it showed before)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        ready, _, _ = select.select([terminal], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} within {timeout}s: {seen!r}"
        seen += os.read(terminal, 4096)
    return seen


def test_jobs_watched_listed_and_cancelled(mlxf, jobs_url, hold):
    job_input = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    job_id = submit_job(jobs_url, CHAT_MODEL, "chat", job_input).json()["job_id"]
    watched = mlxf("job", job_id, "--watch")
    assert watched.exit_code == 0 and f"{job_id}  chat  {CHAT_MODEL}  completed" in watched.output, watched.output
    assert json.loads(mlxf("job", job_id, "--json").output)["result"]["content"] is not None
    listed = json.loads(mlxf("jobs", "--model", CHAT_MODEL, "--limit", "50", "--json").output)
    assert job_id in {job["job_id"] for job in listed["jobs"]}
    refused = mlxf("cancel", job_id)
    assert refused.exit_code == 1 and "409" in refused.output, refused.output

    held = hold("cli-cancel")  # never released: only the cancel ends this job
    running = submit_job(jobs_url, CHAT_MODEL, "chat", {**job_input, "max_tokens": 64}, request_id=held.request_id)
    running_id = running.json()["job_id"]
    held.wait_held()
    cancelled = mlxf("cancel", running_id)
    assert cancelled.exit_code == 0 and f"{running_id}: cancelled" in cancelled.output, cancelled.output
    ended = mlxf("job", running_id, "--watch")
    assert ended.exit_code == 1 and f"{running_id}  chat  {CHAT_MODEL}  cancelled" in ended.output, ended.output


def test_rag_ingest_with_progress_then_query(mlxf, tmp_path):
    collection = f"cli-{uuid.uuid4().hex[:8]}"
    document = tmp_path / "lumen.txt"
    document.write_text(FESTIVAL)
    ingested = mlxf("rag", "ingest", collection, str(document), "--metadata", '{"source": "cli"}')
    assert ingested.exit_code == 0 and f"{collection}: 1 documents, 1 chunks" in ingested.output, ingested.output
    answered = mlxf(
        "rag", "query", collection, "Who founded the Lumen Festival?", "--threshold", "0", "--max-tokens", "4"
    )
    assert answered.exit_code == 0 and "[1] lumen.txt (score" in answered.output, answered.output
    assert collection in mlxf("rag", "collections").output
    missing = mlxf("rag", "query", "no-such-collection", "anything")
    assert missing.exit_code == 1 and "param: collection" in missing.output, missing.output


def test_batch_waited_with_its_output(mlxf, tmp_path):
    requests_file = tmp_path / "requests.jsonl"
    lines = [
        {
            "custom_id": f"q{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": CHAT_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": f"Count to {n}"}]},
        }
        for n in (1, 2)
    ]
    requests_file.write_text("\n".join(json.dumps(line) for line in lines))
    output = tmp_path / "answers.jsonl"
    finished = mlxf("batch", str(requests_file), "--wait", "--output", str(output))
    assert finished.exit_code == 0 and ": completed, 2 completed, 0 failed of 2" in finished.output, finished.output
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(answer["custom_id"] for answer in answers) == ["q1", "q2"]
    assert all(answer["response"]["status_code"] == 200 for answer in answers)
