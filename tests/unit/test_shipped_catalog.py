"""The shipped catalog (``config/models.json``): what ``make run`` keeps warm, and what a request loads on demand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import config
from config.settings import Settings
from models.catalog import load_catalog
from tasks.dispatch import Dispatcher

SHIPPED = Settings(models_file=Path(config.__file__).with_name("models.json"), model_path="", autostart_catalog=True)
"""The shipped catalog, whatever ``MODELS_FILE`` the test session set."""


class NoWorkers:
    """Liveness with no live worker: the stack at rest, before any media request."""

    def models(self) -> dict:
        return {}


def test_make_run_keeps_the_chat_and_embedding_models_warm_and_the_media_models_on_demand():
    catalog = load_catalog(SHIPPED)
    warm = {spec.model_type for spec in catalog.values() if spec.autostart}
    on_demand = {spec.model_type for spec in catalog.values() if spec.on_demand}
    assert warm == {"lm", "embeddings"}
    assert on_demand == {"whisper", "multimodal", "image-generation", "image-edit", "rerank"}
    assert not any(spec.autostart and spec.on_demand for spec in catalog.values())


def test_a_request_naming_no_model_picks_an_on_demand_one_of_its_type_when_none_is_warm():
    dispatcher = Dispatcher(SHIPPED, None, None, NoWorkers())  # type: ignore[arg-type]
    # A stand-in for starting the model's worker (no service runs here): tests/test_on_demand.py starts one for real.
    dispatcher.on_demand = lambda _model_id, _deadline: True
    assert dispatcher.pick_model("transcribe", "model") == "openai/whisper-tiny.en"
    assert dispatcher.pick_model("image_gen", "model", "image-edit") == "mlx-fusion/flux2-klein-edit-tiny-random"


def test_a_catalog_entry_may_quantise_a_language_model_kv_cache(tmp_path: Path):
    def catalog_with(entry: dict) -> dict:
        file = tmp_path / "models.json"
        base = {"id": "test/lm", "type": "lm", "source": {"kind": "local-dir", "path": str(tmp_path)}}
        file.write_text(json.dumps({"models": [{**base, **entry}]}))
        return load_catalog(Settings(models_file=file, model_path=""))

    assert catalog_with({"kv_bits": 8})["test/lm"].kv_bits == 8
    assert catalog_with({})["test/lm"].kv_bits is None
    for wrong in ({"kv_bits": 3}, {"kv_bits": 8, "type": "embeddings"}):
        with pytest.raises(ValueError, match="kv_bits"):
            catalog_with(wrong)
