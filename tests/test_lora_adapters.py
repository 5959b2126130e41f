"""LoRA adapters through the API: added to the session's chat model, named per request as
``<model id>:<adapter id>``, listed, deleted. The adapters are the demo ones trained at set-up
(``models.demo_adapters``): ``upper`` answers in upper case, ``ahoy`` opens with "Ahoy!"."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import openai
import pytest
import requests

from config.settings import Settings
from models.demo_adapters import GREETING, prepare_adapters
from tests.conftest import CHAT_MODEL, SESSION_FOLDER, ask
from tests.stack import ROOT

ADAPTERS = f"/v1/models/{CHAT_MODEL}/adapters"
QUESTION = "Describe a lighthouse in one sentence."


@pytest.fixture(scope="module")
def folders() -> dict[str, Path]:
    return prepare_adapters(Settings(data_dir=ROOT / ".data"))


def answer(client: openai.OpenAI, model: str) -> str:
    reply = client.chat.completions.create(model=model, messages=ask(QUESTION), max_tokens=8, temperature=0)
    return reply.choices[0].message.content


def test_each_adapter_changes_the_answer_only_where_named(base_url, client, folders):
    added = []
    try:
        for name in ("upper", "ahoy"):
            response = requests.post(
                base_url + ADAPTERS, json={"adapter_id": name, "adapter_path": str(folders[name])}, timeout=120
            )
            assert response.status_code == 201, response.text
            added.append(name)
            assert response.json()["id"] == f"{CHAT_MODEL}:{name}" and response.json()["parent"] == CHAT_MODEL
            assert response.json()["rank"] == 8 and response.json()["memory_bytes"] > 0
        listed = requests.get(base_url + ADAPTERS, timeout=10).json()["data"]
        assert sorted(a["adapter_id"] for a in listed) == ["ahoy", "upper"]
        models = {m["id"]: m for m in client.models.list().model_dump()["data"]}
        assert models[f"{CHAT_MODEL}:upper"]["parent"] == CHAT_MODEL

        base = answer(client, CHAT_MODEL)
        upper = answer(client, f"{CHAT_MODEL}:upper")
        ahoy = answer(client, f"{CHAT_MODEL}:ahoy")
        assert upper == upper.upper() and any(c.isalpha() for c in upper), upper
        assert base != base.upper(), base
        assert ahoy.startswith(GREETING) and not base.startswith(GREETING), (ahoy, base)

        stream = client.chat.completions.create(
            model=f"{CHAT_MODEL}:upper", messages=ask(QUESTION), max_tokens=8, temperature=0, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == upper

        again = requests.post(
            base_url + ADAPTERS, json={"adapter_id": "upper", "adapter_path": str(folders["upper"])}, timeout=60
        )
        assert again.status_code == 409 and again.json()["error"]["param"] == "adapter_id"

        gone = requests.delete(f"{base_url}{ADAPTERS}/upper", timeout=60)
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        added.remove("upper")
        with pytest.raises(openai.NotFoundError) as missing:
            answer(client, f"{CHAT_MODEL}:upper")
        assert "upper" in missing.value.body["message"] and missing.value.body["param"] == "model"
        assert answer(client, f"{CHAT_MODEL}:ahoy") == ahoy and answer(client, CHAT_MODEL) == base
    finally:
        for name in added:
            requests.delete(f"{base_url}{ADAPTERS}/{name}", timeout=60)


def test_an_adapter_that_does_not_fit_is_refused_at_load(base_url, request):
    import mlx.core as mx

    folder = request.config.stash[SESSION_FOLDER] / "adapter-other-shape"
    folder.mkdir(exist_ok=True)
    mx.save_safetensors(
        str(folder / "adapters.safetensors"),
        {
            "model.layers.0.self_attn.q_proj.lora_a": mx.zeros((1024, 8)),
            "model.layers.0.self_attn.q_proj.lora_b": mx.zeros((8, 1024)),
        },
    )
    (folder / "adapter_config.json").write_text(json.dumps({"lora_parameters": {"rank": 8, "scale": 20.0}}))
    refused = requests.post(base_url + ADAPTERS, json={"adapter_id": "wide", "adapter_path": str(folder)}, timeout=60)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_adapter" and "q_proj" in refused.json()["error"]["message"]
    outside = requests.post(base_url + ADAPTERS, json={"adapter_id": "x", "adapter_path": "/etc"}, timeout=10)
    assert outside.status_code == 400 and outside.json()["error"]["param"] == "adapter_path"
    unknown_model = requests.get(f"{base_url}/v1/models/{quote('no/such-model')}/adapters", timeout=10)
    assert unknown_model.status_code == 404
    assert all(a["adapter_id"] != "wide" for a in requests.get(base_url + ADAPTERS, timeout=10).json()["data"])
