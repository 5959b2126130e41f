"""Prepares the catalog's models into the data directory, once: ``python -m models.prepare``.

A ``prepared.json`` marker records what each folder was made from; a second
run with the same source and format does nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

from config.settings import Settings
from models.catalog import ModelSpec, load_catalog, served_path
from models.nodes import backend

MARKER = "prepared.json"


def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package {package!r} that ships this model is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def source_file(spec: ModelSpec) -> Path:
    """The file or folder the model is made from."""
    source = spec.source
    if source["kind"] in ("gguf-package", "random-smolvlm", "random-flux2"):
        matches = sorted(package_dir(source["package"]).glob(source.get("glob", "*.gguf")))
        if not matches:
            raise FileNotFoundError(f"no GGUF file in the package {source['package']!r}")
        return matches[0]
    if source["kind"] in ("hf-package", "ct2-whisper-package"):
        return package_dir(source["package"]) / source.get("subdir", "model")
    raise ValueError(f"source kind {source['kind']!r} is not prepared ahead of time")


def weights_format(spec: ModelSpec, settings: Settings) -> str:
    """``WEIGHTS_FORMAT`` if set; on a CUDA node the catalog entry's ``cuda`` format, else float16; elsewhere the
    entry's format for the platform, else float32 (the fastest correct choice on MLX's CPU backend)."""
    if settings.weights_format:
        return settings.weights_format
    if backend() == "cuda":
        return spec.weights.get("cuda") or "float16"
    return spec.weights_format or "float32"


def fingerprint(spec: ModelSpec, source: Path, weights: str) -> dict[str, object]:
    stat = source.stat()
    return {
        "recipe": spec.source,
        "source": str(source.resolve()),  # one path however the virtualenv is reached (a link to it, say)
        "size": stat.st_size,
        "mtime": int(stat.st_mtime),
        "weights": weights,
    }


def is_prepared(target: Path, expected: dict[str, object]) -> bool:
    marker = target / MARKER
    return marker.exists() and json.loads(marker.read_text()) == expected


def prepare(spec: ModelSpec, settings: Settings, progress=print) -> Path:
    """Makes the served folder of ``spec`` if it is missing or stale; returns its path. Processes preparing the
    same folder at once take turns (a lock file beside it): the second finds it ready."""
    target = served_path(settings, spec)
    if spec.source["kind"] == "local-dir":
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepare(spec, settings, target, progress)


def _prepare(spec: ModelSpec, settings: Settings, target: Path, progress) -> Path:
    source = source_file(spec)
    weights = weights_format(spec, settings)
    expected = fingerprint(spec, source, weights)
    if is_prepared(target, expected):
        progress(f"[prepare] {spec.model_id}: ready in {target}")
        return target
    started = time.monotonic()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if spec.source["kind"] == "gguf-package":
        from models.gguf import convert_gguf

        convert_gguf(
            source,
            staging,
            weights,
            progress=lambda step: progress(f"[prepare] {spec.model_id}: {step}"),
        )
    elif spec.source["kind"] == "random-smolvlm":
        from models.tiny_vlm import build_tiny_smolvlm

        build_tiny_smolvlm(source, staging, progress=lambda step: progress(f"[prepare] {spec.model_id}: {step}"))
    elif spec.source["kind"] == "random-flux2":
        from models.tiny_flux import build_tiny_flux2

        build_tiny_flux2(source, staging, progress=lambda step: progress(f"[prepare] {spec.model_id}: {step}"))
    elif spec.source["kind"] == "ct2-whisper-package":
        from models.ct2_whisper import convert_ct2_whisper

        convert_ct2_whisper(
            source,
            staging,
            weights,
            progress=lambda step: progress(f"[prepare] {spec.model_id}: {step}"),
        )
    else:
        progress(f"[prepare] {spec.model_id}: copying {source}")
        shutil.copytree(source, staging)
    (staging / MARKER).write_text(json.dumps(expected))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    progress(f"[prepare] {spec.model_id}: prepared in {target} ({time.monotonic() - started:.1f}s)")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare the catalog's models into the data directory.")
    parser.add_argument("model_ids", nargs="*", help="models to prepare (default: every autostart model)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    catalog = load_catalog(settings)
    wanted = args.model_ids or [spec.model_id for spec in catalog.values() if spec.autostart]
    unknown = [m for m in wanted if m not in catalog]
    if unknown:
        print(f"unknown model ids: {', '.join(unknown)}", file=sys.stderr)
        return 2
    for model_id in wanted:
        prepare(catalog[model_id], settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
