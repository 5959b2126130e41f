"""Which folder a node uses for a model from the Hub: a snapshot counts as the model only with its weights, and a
node that only needs the tokenizer (a control worker chunking for RAG) finds the tokenizer files alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

from config.errors import ApiError
from models import hub
from tests.hub_cache import lay_out_in_hf_cache

REPO = "test-org/tiny"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub's own cache lookup, pointed at a folder of this test's and offline (no hub is reachable
    here): the settings are changed, nothing of huggingface_hub is replaced."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "cache"


def model_folder(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in names:
        (folder / name).write_text("{}")
    return folder


def test_a_cached_snapshot_with_weights_is_the_model(cache: Path, tmp_path: Path):
    snapshot = lay_out_in_hf_cache(cache, REPO, model_folder(tmp_path, "config.json", "model.safetensors"))
    assert hub.cached(REPO) == snapshot
    assert hub.tokenizer_folder(f"hf://{REPO}") == snapshot


def test_tokenizer_files_alone_are_not_the_model_but_serve_the_tokenizer(cache: Path, tmp_path: Path):
    snapshot = lay_out_in_hf_cache(cache, REPO, model_folder(tmp_path, "config.json", "tokenizer.json"))
    assert hub.cached(REPO) is None, "a worker must download the weights, not load a folder without them"
    assert hub.tokenizer_folder(f"hf://{REPO}") == snapshot


def test_a_local_folder_is_its_own_tokenizer_folder_and_a_missing_repo_is_named(cache: Path):
    assert hub.tokenizer_folder("/models/here") == Path("/models/here")
    with pytest.raises(ApiError) as caught:
        hub.tokenizer_folder("hf://test-org/absent")
    assert caught.value.status == 404 and "test-org/absent" in caught.value.message
