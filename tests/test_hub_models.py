"""Models by Hugging Face repo id. No hub is reachable here, so the session runs with ``HF_HUB_OFFLINE=1`` and a
Hugging Face cache of its own (``HF_HUB_CACHE``) into which this test lays out the prepared SmolLM2 exactly as
huggingface_hub stores a download (``models--owner--name/{blobs,refs,snapshots}``); loading by repo id then goes
through huggingface_hub's own cache lookup. A repo that is not cached fails at once, naming the cause.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests

from tests.conftest import CHAT_MODEL_DIR, ask, load_model, unload_model
from tests.hub_cache import lay_out_in_hf_cache
from tests.stack import PYTHON, ROOT

CACHED_REPO = "test-org/SmolLM2-135M-Instruct-cached"
MISSING_REPO = "test-org/never-downloaded"


@pytest.fixture(scope="module")
def hf_cache() -> Path:
    cache = Path(os.environ["HF_HUB_CACHE"])
    lay_out_in_hf_cache(cache, CACHED_REPO, CHAT_MODEL_DIR)
    return cache


def test_a_cached_repo_id_loads_and_serves(base_url, hf_cache):
    loaded = load_model(base_url, CACHED_REPO, None)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["model_id"] == CACHED_REPO
    try:
        answer = requests.post(
            f"{base_url}/v1/chat/completions",
            json={"model": CACHED_REPO, "messages": ask("Say hi."), "max_tokens": 4, "temperature": 0},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] >= 1
        info = requests.get(f"{base_url}/v1/models/{CACHED_REPO}/info", timeout=10).json()
        assert info["status"] == "loaded" and info["download"] is None
    finally:
        unload_model(base_url, CACHED_REPO, force=True)


def test_a_repo_not_in_the_cache_fails_at_once_naming_the_cause(base_url, hf_cache):
    refused = load_model(base_url, MISSING_REPO, None)
    assert refused.status_code == 404, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model_path"
    assert "HF_HUB_OFFLINE" in error["message"] and str(hf_cache) in error["message"]
    assert requests.get(f"{base_url}/v1/models/{MISSING_REPO}", timeout=10).status_code == 404


def test_pull_reports_a_cached_repo_and_names_why_it_cannot_fetch_another(hf_cache):
    argv = [PYTHON, "-m", "models.pull", CACHED_REPO, MISSING_REPO]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert run.returncode == 1
    assert f"{CACHED_REPO}: in the cache at {hf_cache}" in run.stdout
    assert f"{MISSING_REPO}: " in run.stderr and "HF_HUB_OFFLINE" in run.stderr
