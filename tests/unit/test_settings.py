"""Settings read from a given mapping: types, lists, errors naming the variable, overrides; no services."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import settings as settings_module
from config.settings import Settings


def test_defaults_when_the_mapping_is_empty(monkeypatch):
    monkeypatch.setenv("SERVER_PORT", "1234")  # a given mapping is the only source: os.environ is not read
    settings = Settings.from_env({})
    assert settings.server_port == 8000
    assert settings.redis_url == "redis://127.0.0.1:6380/0"
    assert settings.data_dir == Path(".data")
    assert settings.models_file == Path(settings_module.__file__).with_name("models.json")
    assert settings.mlx_warmup is True and settings.worker_plugin_modules == []
    assert settings.model_memory_budget_gb == 0.0
    assert settings.model_roots == "" and settings.webhook_allowed_networks == ""
    assert settings.models_dir == Path(".data/models")
    assert settings.allowed_model_roots == [Path(".data/models").resolve()]
    assert settings.webhook_networks == []
    assert settings.database_name == "mlx_fusion"


def test_os_environ_is_read_without_a_mapping(monkeypatch):
    monkeypatch.setenv("SERVER_PORT", "1234")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = Settings.from_env()
    assert (settings.server_port, settings.log_level) == (1234, "DEBUG")


def test_each_type_is_parsed():
    settings = Settings.from_env(
        {
            "SERVER_PORT": " 9000 ",
            "MODEL_MEMORY_BUDGET_GB": "2.5",
            "DATA_DIR": "/srv/mlxf",
            "MODEL_PATH": "/models/x",
            "MONGODB_URL": "mongodb://db:27017/other?retryWrites=true",
        }
    )
    assert settings.server_port == 9000
    assert settings.model_memory_budget_gb == 2.5
    assert settings.data_dir == Path("/srv/mlxf") and settings.models_dir == Path("/srv/mlxf/models")
    assert settings.model_path == "/models/x"
    assert settings.database_name == "other"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), (" on ", True), ("false", False), ("0", False), ("no", False),
     ("off", False), ("", False)],
)  # fmt: skip
def test_booleans(raw, expected):
    assert Settings.from_env({"MLX_WARMUP": raw}).mlx_warmup is expected


def test_model_roots_are_a_colon_separated_list(tmp_path):
    settings = Settings.from_env({"MODEL_ROOTS": f"{tmp_path / 'a'}::{tmp_path / 'b'}"})
    assert settings.allowed_model_roots == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]


def test_webhook_networks_are_a_comma_separated_list():
    settings = Settings.from_env({"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8, ::1/128 ,,10.1.2.3/8"})
    assert settings.webhook_networks == ["127.0.0.0/8", "::1/128", "10.1.2.3/8"]


@pytest.mark.parametrize(
    ("name", "raw"),
    [("SERVER_PORT", "eighty"), ("SERVER_PORT", ""), ("LOAD_TIMEOUT_SECONDS", "soon"), ("MLX_WARMUP", "maybe")],
)
def test_a_bad_value_names_its_variable(name, raw):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: raw})


def test_a_bad_network_names_webhook_allowed_networks():
    with pytest.raises(ValueError, match="WEBHOOK_ALLOWED_NETWORKS") as error:
        Settings.from_env({"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,not-a-network"})
    assert "not-a-network" in str(error.value)


def test_overrides_win_over_the_mapping():
    settings = Settings.from_env({"SERVER_PORT": "9000", "MLX_WARMUP": "true"}, server_port=7000, mlx_warmup=False)
    assert (settings.server_port, settings.mlx_warmup) == (7000, False)


def test_settings_are_frozen_hashable_and_copied_with_model_copy():
    settings = Settings.from_env({})
    with pytest.raises(ValueError):
        settings.server_port = 1  # type: ignore[misc]
    assert hash(settings) == hash(Settings.from_env({})) and settings == Settings.from_env({})
    changed = settings.model_copy(update={"server_port": 1})
    assert (changed.server_port, settings.server_port) == (1, 8000)
