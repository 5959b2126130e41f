"""``models.prepare``: a prepared folder is found ready however the virtualenv holding its source is reached, and
processes preparing the same folder at once take turns (the test suite's fresh clones link the checkout's
virtualenv, and helpers' worktrees share one data folder)."""

from __future__ import annotations

import threading
from pathlib import Path

from config.settings import Settings
from models import prepare
from models.catalog import load_catalog

EMBEDDING = "sentence-transformers/all-MiniLM-L6-v2"


def test_the_fingerprint_names_the_source_by_its_real_path(tmp_path: Path):
    spec = load_catalog(Settings.from_env())[EMBEDDING]
    source = prepare.source_file(spec)
    link = tmp_path / "venv-link"
    link.symlink_to(source.parent, target_is_directory=True)
    through_link = link / source.name
    assert prepare.fingerprint(spec, through_link, "float32") == prepare.fingerprint(spec, source, "float32")


def test_two_preparations_at_once_take_turns_and_the_second_finds_it_ready(tmp_path: Path, monkeypatch):
    # DATA_DIR is pointed at a temporary folder: the session's prepared models are not touched.
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    settings = Settings.from_env()
    spec = load_catalog(settings)[EMBEDDING]
    said: list[str] = []
    threads = [threading.Thread(target=prepare.prepare, args=(spec, settings, said.append)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sum("prepared in" in line for line in said) == 1 and sum("ready in" in line for line in said) == 1
    target = prepare.served_path(settings, spec)
    weights = prepare.weights_format(spec, settings)
    assert prepare.is_prepared(target, prepare.fingerprint(spec, prepare.source_file(spec), weights))
    assert not list(target.parent.glob("*.partial"))
