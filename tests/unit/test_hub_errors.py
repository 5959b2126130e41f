"""A Hugging Face repo that cannot be fetched fails fast, naming why: here the Hub is a local port where nothing
listens (no network), and offline mode with nothing cached.

``monkeypatch`` sets only ``hub.offline``: huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, so a test in
a running process flips our reading of it instead. The requests themselves are real (refused by the closed port).
"""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi

from config.errors import ApiError
from models import hub
from tests.stack import free_port


def test_an_unreachable_hub_is_503_naming_its_address(monkeypatch):
    monkeypatch.setattr(hub, "offline", lambda: False)
    endpoint = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ApiError) as caught:
        hub.weights_on_hub("mlx-community/qwen2.5-7b-instruct-4bit", HfApi(endpoint=endpoint))
    assert caught.value.status == 503 and caught.value.code == "hub_unreachable"
    assert endpoint in caught.value.message and "Cannot reach the Hugging Face Hub" in caught.value.message


def test_offline_and_not_cached_is_404_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "offline", lambda: True)
    with pytest.raises(ApiError) as caught:
        hub.weights_on_hub("mlx-community/qwen2.5-7b-instruct-4bit")
    assert caught.value.status == 404 and caught.value.code == "model_not_found"
    assert "HF_HUB_OFFLINE" in caught.value.message


def test_repo_ids_are_told_from_paths():
    assert hub.is_repo_id("mlx-community/qwen2.5-7b-instruct-4bit")
    assert not hub.is_repo_id("/models/qwen") and not hub.is_repo_id("qwen") and not hub.is_repo_id("a/b/c")
