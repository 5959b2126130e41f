"""Every media type loads through ``POST /v1/models/load`` like a chat model, is listed with its capability and
tags, takes its job operation, and unloads."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import ROOT, load_model, submit_job, unload_model, wait_for_job

MODELS = ROOT / ".data" / "models"
COPIES = {
    "test/whisper-copy": ("whisper", "openai--whisper-tiny.en", "transcription"),
    "test/vision-copy": ("multimodal", "mlx-fusion--smolvlm-tiny-random", "vision"),
    "test/edit-copy": ("image-edit", "mlx-fusion--flux2-klein-edit-tiny-random", "image_generation"),
}


def load_copy(base_url: str, model_id: str) -> requests.Response:
    model_type, folder, _capability = COPIES[model_id]
    return load_model(base_url, str(MODELS / folder), model_id, model_type=model_type)


def test_each_media_type_loads_lists_serves_and_unloads(base_url, jobs_url, tmp_path):
    try:
        # The three load at once: each load waits for its own worker, and the workers start side by side.
        with ThreadPoolExecutor(len(COPIES)) as pool:
            loads = dict(zip(COPIES, pool.map(lambda model_id: load_copy(base_url, model_id), COPIES), strict=True))
        for loaded in loads.values():
            assert loaded.status_code == 200, loaded.text
        capabilities = requests.get(f"{base_url}/api/fusion/capabilities", timeout=10).json()["capabilities"]
        listed = {m["id"]: m for m in requests.get(f"{base_url}/v1/models", timeout=10).json()["data"]}
        for model_id, (model_type, _folder, capability) in COPIES.items():
            assert model_id in capabilities[capability], capability
            assert listed[model_id]["type"] == model_type
        assert "audio" in listed["test/whisper-copy"]["tags"] and "vision" in listed["test/vision-copy"]["tags"]

        wrong = submit_job(jobs_url, "test/vision-copy", "transcribe", {"file": base64.b64encode(b"RIFF").decode()})
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "operation"
        job = submit_job(jobs_url, "test/edit-copy", "image_gen", {"prompt": "x", "size": "64x64", "steps": 1})
        assert job.status_code == 202, job.text
        done = wait_for_job(jobs_url, job.json()["job_id"])
        assert done["status"] == "failed" and "image" in done["error"], "an edit needs an image"
    finally:
        with ThreadPoolExecutor(len(COPIES)) as pool:
            list(pool.map(lambda model_id: unload_model(base_url, model_id, force=True), COPIES))
    for model_id in COPIES:
        assert requests.get(f"{base_url}/v1/models/{model_id}", timeout=10).status_code == 404
