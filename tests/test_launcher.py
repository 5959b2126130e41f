"""A user starts the stack the mlx-openai-server way: ``mlx-fusion-server --model-path ... --port ...``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pymongo
import requests

from tasks.schema import create_schema
from tests.conftest import CHAT_MODEL_DIR, submit_job, wait_for_job
from tests.stack import free_port, link_tree, wait_until


def test_launcher_serves_the_given_model_with_mlx_openai_server_flags(stack, tmp_path):
    model_dir = link_tree(CHAT_MODEL_DIR, tmp_path / "my-chat-model")
    port = free_port()
    redis_db1 = stack.env["REDIS_URL"].rsplit("/", 1)[0] + "/1"
    mongo_other = stack.env["MONGODB_URL"].rsplit("/", 1)[0] + "/mlxf_launcher"
    with pymongo.MongoClient(mongo_other) as client:  # as docs/operations.md asks before a new database's first start
        create_schema(client.get_default_database())
    log = open(tmp_path / "launcher.log", "wb")  # noqa: SIM115
    launcher = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlx-fusion-server")),
            "--model-path",
            str(model_dir),
            "--model-type",
            "lm",
            "--context-length",
            "1024",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--max-concurrency",
            "1",
        ],
        env={**os.environ, "REDIS_URL": redis_db1, "MONGODB_URL": mongo_other},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: requests.get(f"{base_url}/health", timeout=2).status_code == 200,
            180,
            "the launched stack",
            launcher,
        )
        health = requests.get(f"{base_url}/health", timeout=5).json()
        assert health["model_id"] == "my-chat-model"
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == ["my-chat-model"], "only the given model is served"
        assert client.models.retrieve("my-chat-model").model_dump()["context_length"] == 1024
        answer = client.chat.completions.create(
            model="my-chat-model",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            temperature=0,
            max_tokens=12,
        )
        assert "Paris" in answer.choices[0].message.content
        job = submit_job(
            f"{base_url}/api/mcp",
            "my-chat-model",
            "chat",
            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
        )
        assert job.status_code == 202, job.text
        assert wait_for_job(f"{base_url}/api/mcp", job.json()["job_id"])["status"] == "completed", "jobs run too"
    finally:
        os.killpg(launcher.pid, signal.SIGTERM)
        launcher.wait(60)
        log.close()
