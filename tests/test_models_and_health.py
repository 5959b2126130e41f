"""A user lists models, looks one up by an id containing '/', and checks health."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from tests.conftest import CHAT_MODEL, DEFAULT_MODELS, EMBEDDING_MODEL, RERANK_MODEL, WHISPER_MODEL, worker_pid
from tests.stack import wait_until


def test_models_list_shows_both_default_models_loaded(client):
    models = {model.id: model for model in client.models.list()}
    assert {CHAT_MODEL, EMBEDDING_MODEL} <= set(models)
    chat = models[CHAT_MODEL].model_dump()
    assert chat["object"] == "model" and chat["owned_by"] == "local-mlx"
    assert chat["status"] == "loaded" and chat["type"] == "lm" and chat["family"] == "smollm"
    assert chat["tier"] == "3A" and "chat" in chat["tags"] and chat["context_length"] == 8192
    assert chat["vram_usage_gb"] > 0.1, "memory measured by the worker"
    assert models[EMBEDDING_MODEL].model_dump()["type"] == "embeddings"


def test_model_ids_with_a_slash_work_raw_and_percent_encoded(base_url, client):
    raw = requests.get(f"{base_url}/v1/models/{CHAT_MODEL}", timeout=10)
    encoded = requests.get(f"{base_url}/v1/models/{quote(CHAT_MODEL, safe='')}", timeout=10)
    assert raw.status_code == encoded.status_code == 200
    assert raw.json()["id"] == encoded.json()["id"] == CHAT_MODEL
    assert client.models.retrieve(CHAT_MODEL).id == CHAT_MODEL


def test_unknown_model_id_is_404(base_url):
    response = requests.get(f"{base_url}/v1/models/nobody/nothing", timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_health_reports_the_contract_fields(base_url):
    response = requests.get(f"{base_url}/health", timeout=10)
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert body["model_id"] == CHAT_MODEL and body["model_status"] == "loaded"
    assert body["models_healthy"] is True
    assert body["warmup_enabled"] is True and body["warmup_completed"] is True
    assert isinstance(body["latency_ms"], float) and round(body["latency_ms"], 2) == body["latency_ms"]
    assert body["persistence"]["mongodb_connected"] and body["persistence"]["redis_connected"]
    assert {m["id"] for m in body["models"]["models"]} >= {CHAT_MODEL, EMBEDDING_MODEL}


def test_health_is_503_with_the_same_shape_when_the_default_model_has_no_worker(stack):
    _service, other = stack.start_web("web-no-default", {"DEFAULT_CHAT_MODEL": "test/absent-model"})
    response = requests.get(f"{other}/health", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error" and body["models_healthy"] is False
    assert body["model_id"] == "test/absent-model" and body["model_status"] == "missing"
    assert "latency_ms" in body and "persistence" in body


def loads_torch(redis_client, model_id: str) -> bool:
    """Whether the model's worker has PyTorch's library mapped."""
    return "libtorch" in Path(f"/proc/{worker_pid(redis_client, model_id)}/maps").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the worker's /proc/<pid>/maps")
def test_language_embedding_and_rerank_workers_never_load_pytorch(supervisor, redis_client):
    """transformers imports torch whenever it is installed, 1.3 s of CPU and about 300 MB in each worker; the model
    types that compute without it hide it (``models.torch_absent``). Whisper's worker keeps it, and shows that the
    check sees it."""
    for model_id in (CHAT_MODEL, EMBEDDING_MODEL, RERANK_MODEL):
        assert not loads_torch(redis_client, model_id), model_id
    assert loads_torch(redis_client, WHISPER_MODEL)


def test_every_default_model_answers_its_health_probe(base_url: str):
    def all_answering() -> bool:
        """Every model answering and its first probe done: a request answered before the probe came back is
        ``answering`` too, with no probe ``ms`` yet."""
        entries = requests.get(f"{base_url}/health", timeout=10).json()["models"]["models"]
        probes = {m["id"]: m["probe"] or {} for m in entries}
        return all(
            probes.get(model_id, {}).get("verdict") == "answering" and probes[model_id].get("ms") is not None
            for model_id in DEFAULT_MODELS
        )

    wait_until(all_answering, 60, "every default model to answer its health probe")
    entries = {m["id"]: m for m in requests.get(f"{base_url}/health", timeout=10).json()["models"]["models"]}
    for model_id in DEFAULT_MODELS:
        entry = entries[model_id]
        assert entry["status"] == "loaded" and entry["probe"]["error"] is None, entry
        assert entry["probe"]["ms"] > 0 and entry["probe"]["age_seconds"] >= 0, entry
