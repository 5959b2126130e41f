"""A user loads, uses, observes and unloads models at runtime; broken files and memory limits are handled."""

from __future__ import annotations

import uuid
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import (
    CHAT_MODEL,
    CHAT_MODEL_DIR,
    EMBEDDING_MODEL,
    ask,
    load_model,
    unload_model,
    worker_is_live,
)
from tests.stack import link_tree


def error_of(response: requests.Response) -> dict:
    return response.json()["error"]


def test_load_chat_observe_and_unload_a_second_model(base_url, client, redis_client):
    model_id = "test/second-lm"
    loaded = load_model(
        base_url,
        str(CHAT_MODEL_DIR),
        model_id,
        context_length=1024,
        kv_bits=8,
        metadata={"description": "a second copy", "owner": "tests"},
    )
    body = loaded.json()
    assert loaded.status_code == 200, body
    assert body["model_id"] == model_id and body["status"] == "loaded"
    assert body["vram_usage_gb"] > 0.1 and body["load_time_ms"] > 0
    assert body["metadata"]["family"] == "unknown" and body["metadata"]["type"] == "lm"
    assert body["metadata"]["tier"] == "3A" and body["metadata"]["context_length"] == 1024
    assert body["metadata"]["description"] == "a second copy" and body["metadata"]["user"] == {"owner": "tests"}
    assert body["metadata"]["kv_bits"] == 8 and "kv_bits" not in model_info(base_url, CHAT_MODEL)["metadata"]
    assert worker_is_live(redis_client, model_id)
    queues = requests.get(f"{base_url}/v1/queue/stats", timeout=10).json()["queues"]
    # SmolLM2-135M: 30 layers, 3 KV heads of 64; float32, or a byte a value plus a scale and a bias per 64 values
    assert queues[CHAT_MODEL]["kv_bytes_per_token"] == 2 * 30 * 3 * 64 * 4
    assert queues[model_id]["kv_bytes_per_token"] == 2 * 30 * 3 * (64 + 2 * 4)

    try:
        answer = client.chat.completions.create(
            model=model_id, messages=ask("What is the capital of France?"), temperature=0, max_tokens=12
        )
        assert "Paris" in answer.choices[0].message.content
        with pytest.raises(openai.BadRequestError):  # its context is 1024 tokens, as loaded
            client.chat.completions.create(model=model_id, messages=ask("Hi"), max_tokens=2000)

        info = requests.get(f"{base_url}/v1/models/{model_id}/info", timeout=10).json()
        assert info["status"] == "loaded" and info["request_count"] == 2 and info["last_used"]
        assert info["load_time"] and info["metadata"]["id"] == model_id

        stats = requests.get(f"{base_url}/v1/models/{model_id}/stats", timeout=10).json()
        assert stats["request_count"] == 2 and stats["error_count"] == 1 and stats["last_error"]
        assert stats["total_tokens_processed"] == answer.usage.total_tokens
        assert 0 < stats["p50_latency_ms"] <= stats["p95_latency_ms"] <= stats["p99_latency_ms"]

        warm = requests.post(f"{base_url}/v1/models/{model_id}/warmup", json={"prompt": "Hello world"}, timeout=60)
        assert warm.status_code == 200 and warm.json()["status"] == "warmed" and warm.json()["prompt_tokens"] == 2

        listed = {m.id: m.model_dump() for m in client.models.list()}
        assert listed[model_id]["status"] == "loaded"
    finally:
        unloaded = unload_model(base_url, model_id)
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json()["status"] == "unloaded" and unloaded.json()["vram_freed_gb"] > 0.1

    assert requests.get(f"{base_url}/v1/models/{model_id}/info", timeout=10).status_code == 404
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=model_id, messages=ask("Hi"), max_tokens=2)
    assert not worker_is_live(redis_client, model_id)
    assert unload_model(base_url, model_id).status_code == 404


def model_info(base_url: str, model_id: str) -> dict:
    return requests.get(f"{base_url}/v1/models/{model_id}/info", timeout=10).json()


def test_load_errors(base_url, tmp_path):
    odd_bits = load_model(base_url, str(CHAT_MODEL_DIR), "test/x", kv_bits=3)
    assert odd_bits.status_code == 400 and error_of(odd_bits)["param"] == "kv_bits"
    no_kv = load_model(base_url, str(CHAT_MODEL_DIR), "test/x", model_type="embeddings", kv_bits=8)
    assert no_kv.status_code == 400 and error_of(no_kv)["param"] == "kv_bits"
    duplicate = load_model(base_url, str(CHAT_MODEL_DIR), CHAT_MODEL)
    assert duplicate.status_code == 409 and error_of(duplicate)["code"] == "model_already_loaded"

    bad_type = load_model(base_url, str(CHAT_MODEL_DIR), "test/x", model_type="llm")
    assert bad_type.status_code == 400 and error_of(bad_type)["param"] == "model_type"

    wrong_folder = load_model(base_url, str(CHAT_MODEL_DIR), "test/not-whisper", model_type="whisper")
    assert error_of(wrong_folder)["code"] == "model_load_failed", wrong_folder.text
    assert "ModelDimensions" in error_of(wrong_folder)["message"], "the loader's own error, not a guess"
    assert unload_model(base_url, "test/not-whisper").status_code == 200, "a failed model can be removed"

    outside = load_model(base_url, "/etc", "test/x")
    assert outside.status_code == 400 and error_of(outside)["code"] == "invalid_model_path"
    escape = load_model(base_url, str(CHAT_MODEL_DIR / ".." / ".." / ".."), "test/x")
    assert escape.status_code == 400 and error_of(escape)["param"] == "model_path"
    hub_id = load_model(base_url, "mlx-community/qwen2.5-7b-instruct-4bit", "test/x")  # offline, not cached
    assert hub_id.status_code == 404 and "HF_HUB_OFFLINE" in error_of(hub_id)["message"]

    assert requests.get(f"{base_url}/v1/models/test/x/info", timeout=10).status_code == 404


def test_corrupt_weights_fail_at_load_and_never_serve(stack, base_url, client):
    broken = link_tree(CHAT_MODEL_DIR, stack.workdir / "broken-lm")
    weights = broken / "model.safetensors"
    weights.unlink()
    with (CHAT_MODEL_DIR / "model.safetensors").open("rb") as whole:
        weights.write_bytes(whole.read(2_000_000))  # the header and the first tensors' start: cut short

    loaded = load_model(base_url, str(broken), "test/broken-lm")
    assert loaded.status_code == 400, loaded.text
    assert error_of(loaded)["code"] == "model_load_failed"
    assert "failed to load" in error_of(loaded)["message"]

    listed = {m.id: m.model_dump() for m in client.models.list()}
    assert listed["test/broken-lm"]["status"] == "failed" and listed["test/broken-lm"]["error"]
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="test/broken-lm", messages=ask("Hi"), max_tokens=2)

    health = requests.get(f"{base_url}/health", timeout=10).json()
    assert "test/broken-lm" in health["models"]["failed"] and health["status"] == "ok"
    _service, strict = stack.start_web("web-broken-default", {"DEFAULT_CHAT_MODEL": "test/broken-lm"})
    broken_health = requests.get(f"{strict}/health", timeout=10)
    assert broken_health.status_code == 503
    assert broken_health.json()["model_status"] == "failed"

    unloaded = unload_model(base_url, "test/broken-lm")
    assert unloaded.status_code == 200, unloaded.text


def test_unload_in_use_needs_force(base_url, client, hold):
    model_id = "test/busy-lm"
    assert load_model(base_url, str(CHAT_MODEL_DIR), model_id, context_length=4096).status_code == 200
    held = hold("busy-unload")  # never released: the request is running until the forced unload ends it
    stream = client.with_options(timeout=60).chat.completions.create(
        model=model_id,
        messages=ask("Count from 1 to 1000."),
        max_tokens=100,
        stream=True,
        temperature=0,
        extra_headers={"X-Request-ID": held.request_id},
    )
    chunks = iter(stream)
    next(chunks)
    held.wait_held()
    refused = unload_model(base_url, model_id)
    assert refused.status_code == 409 and error_of(refused)["code"] == "model_in_use"
    forced = unload_model(base_url, model_id, force=True)
    assert forced.status_code == 200
    with pytest.raises(openai.APIError):
        for _ in chunks:
            pass
    assert requests.get(f"{base_url}/v1/models/{model_id}", timeout=10).status_code == 404


def test_capabilities_are_listed_and_filterable(base_url):
    everything = requests.get(f"{base_url}/api/fusion/capabilities", timeout=10).json()
    assert CHAT_MODEL in everything["capabilities"]["chat"]
    assert EMBEDDING_MODEL in everything["capabilities"]["embeddings"]
    assert everything["capabilities"]["tool_calling"] == []
    embeddings_only = requests.get(
        f"{base_url}/api/fusion/capabilities", params={"capability": "embeddings"}, timeout=10
    ).json()
    assert list(embeddings_only["capabilities"]) == ["embeddings"]
    assert [m["id"] for m in embeddings_only["models"]] == [EMBEDDING_MODEL]
    bogus = requests.get(f"{base_url}/api/fusion/capabilities", params={"capability": "telepathy"}, timeout=10)
    assert bogus.status_code == 400 and bogus.json()["error"]["param"] == "capability"


def test_a_replica_that_fails_on_one_node_while_others_serve_fails_only_there(base_url):
    """A failure is its node's while other nodes serve the model: that node's replica is taken off it (none is
    placed there again) and the model stays loaded, its queued jobs waiting for it; with no replica serving
    elsewhere it is the model's. (The record is the registry's own, in the session's MongoDB; its id is one the
    session's node may not serve, so no worker of this test's making runs.)"""
    from config import mongo
    from config.settings import Settings
    from models import registry

    mongo.connect(Settings.from_env())
    model_id = f"nodes/scoped-failure-{uuid.uuid4().hex[:6]}"
    registry.request_load(model_id, "lm", Path("/nonexistent"), nodes=["node-x", "node-y"], replicas=2)
    try:
        registry.record_failed(model_id, "no files on node-y", "node-y", serving_elsewhere=True)
        record = registry.get_record(model_id)
        assert record.status == "loading" and list(record.nodes) == ["node-x"]
        assert registry.failed_nodes(record) == {"node-y"}
        info = requests.get(f"{base_url}/v1/models/{model_id}/info", timeout=10).json()
        assert info["failed_on"] == [{"node": "node-y", "error": "no files on node-y"}]
        registry.record_failed(model_id, "no files on node-x either", "node-x", serving_elsewhere=False)
        assert registry.get_record(model_id).status == "failed"
    finally:
        registry.request_unload(model_id, force=True)
        registry.forget(model_id)
