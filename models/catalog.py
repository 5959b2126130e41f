"""The models this installation knows: the catalog file in ``config/`` plus the ``MODEL_PATH`` model."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from config.model_types import KV_BITS
from config.settings import Settings

_FAMILIES = (
    "qwen",
    "llama",
    "gemma",
    "mistral",
    "mixtral",
    "phi",
    "smolvlm",
    "smollm",
    "deepseek",
    "granite",
    "olmo",
    "minilm",
    "bert",
    "bge",
    "e5",
    "whisper",
    "flux",
    "stable-diffusion",
    "llava",
    "pixtral",
)


@dataclass(frozen=True)
class ModelSpec:
    """How to obtain and serve one model."""

    model_id: str
    model_type: str
    source: dict[str, Any]
    context_length: int | None = None
    kv_bits: int | None = None
    """A language model's KV cache quantised to 4 or 8 bits (``models.kv_quantized``); None: full precision."""
    description: str = ""
    tags: tuple[str, ...] = ()
    weights: dict[str, str] = field(default_factory=dict)
    autostart: bool = False
    on_demand: bool = False
    """Listed as ``available`` without being loaded; loaded when a request first names it, unloaded when idle."""
    idle_unload_seconds: float | None = None
    """An on-demand model without a request for this long is unloaded (default ``IDLE_UNLOAD_SECONDS``)."""

    @property
    def weights_format(self) -> str | None:
        """The weights format prepared for this platform (``float32`` on Linux CPU, ``q4`` on macOS)."""
        return self.weights.get("darwin" if sys.platform == "darwin" else "linux")

    @property
    def family(self) -> str:
        return family_of(self.model_id)


def family_of(model_id: str) -> str:
    """The model family named in ``model_id`` (e.g. ``qwen``, ``llama``, ``smollm``), else ``unknown``."""
    name = model_id.rsplit("/", 1)[-1].lower()
    for family in _FAMILIES:
        if family in name:
            return family
    return "unknown"


def slug(model_id: str) -> str:
    """A file- and hostname-safe form of ``model_id``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model_id).strip("-") or "model"


def _from_entry(entry: dict[str, Any]) -> ModelSpec:
    kv_bits = entry.get("kv_bits")
    if kv_bits is not None and (entry["type"] != "lm" or kv_bits not in KV_BITS):
        raise ValueError(f"catalog entry {entry['id']}: kv_bits is 4 or 8, for a language model (lm) only")
    return ModelSpec(
        model_id=entry["id"],
        model_type=entry["type"],
        source=entry["source"],
        context_length=entry.get("context_length"),
        kv_bits=kv_bits,
        description=entry.get("description", ""),
        tags=tuple(entry.get("tags", ())),
        weights=entry.get("weights", {}),
        autostart=bool(entry.get("autostart", False)),
        on_demand=bool(entry.get("on_demand", False)),
        idle_unload_seconds=entry.get("idle_unload_s"),
    )


def load_catalog(settings: Settings) -> dict[str, ModelSpec]:
    """Every known model by id: the catalog file first, then the provider-contract ``MODEL_PATH`` model."""
    entries = json.loads(Path(settings.models_file).read_text())["models"]
    specs = {spec.model_id: spec for spec in map(_from_entry, entries)}
    if not settings.autostart_catalog:  # one model only (the launcher): none started, none offered on demand
        specs = {model_id: replace(spec, autostart=False, on_demand=False) for model_id, spec in specs.items()}
    if settings.model_path in specs:
        specs[settings.model_path] = replace(specs[settings.model_path], autostart=True)
    elif settings.model_path:
        path = Path(settings.model_path)
        model_id = path.name if path.exists() else settings.model_path
        specs[model_id] = ModelSpec(
            model_id=model_id,
            model_type=settings.model_type,
            source={"kind": "local-dir", "path": str(path)},
            context_length=settings.context_length,
            tags=("local",),
            autostart=True,
        )
    return specs


def served_path(settings: Settings, spec: ModelSpec) -> Path:
    """Where the worker loads the model from: the prepared copy, or the local folder as given."""
    if spec.source.get("kind") == "local-dir":
        return Path(spec.source["path"])
    return settings.models_dir / slug(spec.model_id)
