"""Loading and unloading models at runtime, for the API: validate, make room, record the wish, wait for it.

The API process never starts a worker itself: it writes the desired state to
the registry and waits until the supervisor and the worker have made it true
(or failed, or the deadline passed). Nothing here imports mlx.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.errors import ApiError
from config.model_types import SERVED_TYPES, TYPE_NAMES
from config.settings import Settings
from models import hub, registry
from models.catalog import ModelSpec, load_catalog, served_path
from models.liveness import Liveness
from models.stats import ModelStats

log = logging.getLogger(__name__)

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
_WEIGHT_SUFFIXES = (".safetensors", ".npz", ".gguf")
_POLL_SECONDS = 0.2


def weights_bytes(path: Path) -> int:
    """Bytes of weight files in ``path``: the memory a float model will take, near enough to plan with."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))


def _gb(size: int | float) -> float:
    return round(size / 1e9, 3)


@dataclass(frozen=True)
class Holding:
    """A model holding memory, as the budget sees it."""

    model_id: str
    size: int
    idle: bool
    last_used: float


def evictions(held: list[Holding], need: int, budget: float) -> list[str]:
    """The idle models to unload, least recently used first, so that ``need`` more bytes fit ``budget``.

    Raises the 503 ``insufficient_vram`` when even unloading every idle model would not make room.
    """
    used = sum(h.size for h in held)
    if used + need <= budget:
        return []
    idle = sorted((h for h in held if h.idle), key=lambda h: h.last_used)
    freeable = sum(h.size for h in idle)
    if need > budget or used - freeable + need > budget:
        raise ApiError(
            503,
            f"Not enough memory: the model needs {_gb(need)} GB, the budget is {_gb(budget)} GB "
            f"and {_gb(used)} GB are held ({_gb(freeable)} GB by idle models)",
            code="insufficient_vram",
        )
    chosen = []
    for holding in idle:
        if used + need <= budget:
            break
        chosen.append(holding.model_id)
        used -= holding.size
    return chosen


class ModelLifecycle:
    def __init__(
        self, settings: Settings, liveness: Liveness, stats: ModelStats, queue_depth: Callable[[str], int]
    ) -> None:
        self.settings = settings
        self.liveness = liveness
        self.stats = stats
        self.queue_depth = queue_depth

    # --- load -------------------------------------------------------------------------------------------

    def resolve_path(self, model_path: str) -> tuple[Path | None, ModelSpec | None, str | None]:
        """What ``model_path`` names: a catalog model's prepared folder, a folder under the roots, or a Hugging
        Face repo id (its cached snapshot, or None when it is still to be downloaded) as the third item."""
        catalog = load_catalog(self.settings)
        if model_path in catalog and catalog[model_path].source.get("kind") != "local-dir":
            spec = catalog[model_path]
            return served_path(self.settings, spec), spec, None
        try:
            candidate = Path(model_path).expanduser()
            resolved = candidate.resolve()
        except (RuntimeError, ValueError, OSError) as exc:  # "~nobody", a NUL byte, a loop of links
            message = f"model_path is not a usable path: {exc}"
            raise ApiError(400, message, code="invalid_value", param="model_path") from None
        allowed = any(resolved == root or root in resolved.parents for root in self.settings.allowed_model_roots)
        if not (allowed and resolved.exists()) and not candidate.is_absolute() and hub.is_repo_id(model_path):
            return hub.cached(model_path), None, model_path
        if not allowed:
            roots = ", ".join(str(root) for root in self.settings.allowed_model_roots)
            raise ApiError(
                400,
                f"model_path must be a catalog model, a Hugging Face repo id or a folder under {roots}",
                code="invalid_model_path",
                param="model_path",
            )
        if not (resolved / "config.json").is_file():
            raise ApiError(
                400,
                f"{model_path} is not a model folder (no config.json)",
                code="invalid_model_path",
                param="model_path",
            )
        return resolved, None, None

    def load(
        self,
        model_path: str,
        model_type: str,
        model_id: str | None = None,
        context_length: int | None = None,
        priority: str = "normal",
        metadata: dict[str, Any] | None = None,
        max_concurrency: int | None = None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        if model_type not in TYPE_NAMES:
            raise ApiError(
                400,
                f"model_type must be one of {', '.join(TYPE_NAMES)}",
                code="invalid_model_type",
                param="model_type",
            )
        if model_type not in SERVED_TYPES:
            raise ApiError(
                400,
                f"model_type {model_type!r} has no handler on this platform yet (served: {', '.join(SERVED_TYPES)})",
                code="unsupported_model_type",
                param="model_type",
            )
        path, spec, repo = self.resolve_path(model_path)
        model_id = model_id or (spec.model_id if spec else repo or path.name)
        if not _MODEL_ID.match(model_id):
            raise ApiError(
                400,
                "model_id may hold letters, digits and . _ : / @ + - (at most 200)",
                code="invalid_model_id",
                param="model_id",
            )
        existing = registry.get_record(model_id)
        if existing is not None and existing.status != "failed":
            raise ApiError(
                409,
                f"Model '{model_id}' already exists (status {existing.status})",
                code="model_already_loaded",
                param="model_id",
            )
        # A repo not in the cache: its size is asked of the Hub before anything is downloaded.
        self.make_room(weights_bytes(path) if path else hub.weights_on_hub(repo), exclude=model_id)
        metadata = dict(metadata or {})
        description = str(metadata.pop("description", "") or (spec.description if spec else ""))
        registered = registry.request_load(
            model_id,
            model_type,
            path or f"{hub.HUB_PREFIX}{repo}",
            context_length=context_length or (spec.context_length if spec else None),
            description=description,
            tags=registry.tags_for(model_type, path or Path(model_path), spec.tags if spec else ()),
            priority=priority,
            user_metadata=metadata,
            max_concurrency=max_concurrency,
        )
        if not registered:
            raise ApiError(409, f"Model '{model_id}' already exists", code="model_already_loaded", param="model_id")
        record = self._wait_for_load(model_id, started + self.settings.load_timeout_seconds)
        return {
            "model_id": model_id,
            "status": "loaded",
            "vram_usage_gb": _gb(record.memory_bytes),
            "load_time_ms": round((time.monotonic() - started) * 1000, 1),
            "metadata": record.metadata(),
        }

    def start_on_demand(self, model_id: str, deadline: float) -> bool:
        """Starts loading the catalog's on-demand model ``model_id`` unless it is loading or loaded already (one
        load however many requests name it); False when ``model_id`` is not an on-demand model, 503
        ``insufficient_vram`` when it cannot fit."""
        spec = load_catalog(self.settings).get(model_id)
        if spec is None or not spec.on_demand:
            return False
        record = registry.get_record(model_id)
        while record is not None and record.desired == "unloaded" and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)  # unloading after an idle spell: load it again once it is gone
            record = registry.get_record(model_id)
        if record is None or record.status == "failed":
            path = served_path(self.settings, spec)
            self.make_room(weights_bytes(path), exclude=model_id)
            if registry.request_catalog_load(spec, path):
                log.info("loading the on-demand model %s for a request", model_id)
        return True

    def load_on_demand(self, model_id: str, deadline: float) -> bool:
        """``start_on_demand``, then waits (at most until ``deadline``, monotonic) until the model serves."""
        if not self.start_on_demand(model_id, deadline):
            return False
        self._wait_for_load(model_id, deadline)
        return True

    def _wait_for_load(self, model_id: str, deadline: float) -> registry.ModelRecord:
        while time.monotonic() < deadline:
            record = registry.get_record(model_id)
            if record is None or record.desired != "loaded":
                raise ApiError(409, f"Model '{model_id}' was unloaded while loading", code="conflict", param="model_id")
            if record.status == "failed":
                raise ApiError(
                    400,
                    f"Model '{model_id}' failed to load: {record.error}",
                    code="model_load_failed",
                    param="model_path",
                )
            if record.status == "loaded" and self.liveness.workers(model_id):
                return record
            time.sleep(_POLL_SECONDS)
        raise ApiError(
            504,
            f"Model '{model_id}' did not finish loading within {self.settings.load_timeout_seconds:g}s"
            " (it goes on loading)",
            code="timeout",
        )

    # --- memory budget ----------------------------------------------------------------------------------

    def held_bytes(self, record: registry.ModelRecord) -> int:
        return record.memory_bytes or weights_bytes(Path(record.path))

    def busy(self, model_id: str) -> bool:
        workers = self.liveness.workers(model_id)
        return any(w.get("active", 0) or w.get("queued", 0) for w in workers) or self.queue_depth(model_id) > 0

    def make_room(self, need: int, exclude: str) -> None:
        """Unloads least-recently-used idle models until ``need`` bytes fit the budget; 503 when they can't."""
        budget = self.settings.model_memory_budget_gb * 1e9
        if budget <= 0:
            return
        held = [r for r in registry.list_records() if r.status in ("loading", "loaded") and r.model_id != exclude]
        holdings = [
            Holding(
                r.model_id,
                self.held_bytes(r),
                idle=r.status == "loaded" and not self.busy(r.model_id),
                last_used=self.stats.last_used(r.model_id) or (r.loaded_at.timestamp() if r.loaded_at else 0.0),
            )
            for r in held
        ]
        for model_id in evictions(holdings, need, budget):
            self.unload(model_id, force=False)

    # --- unload -----------------------------------------------------------------------------------------

    def unload(self, model_id: str, force: bool = False) -> dict[str, Any]:
        started = time.monotonic()
        record = registry.get_record(model_id)
        if record is None:
            raise ApiError(404, f"Model '{model_id}' not found", code="model_not_found", param="model_id")
        if not force and self.busy(model_id):
            raise ApiError(
                409,
                f"Model '{model_id}' is serving requests; unload with force=true to stop them",
                code="model_in_use",
                param="model_id",
            )
        registry.request_unload(model_id, force)
        deadline = started + self.settings.unload_timeout_seconds
        while registry.get_record(model_id) is not None:
            if time.monotonic() > deadline:
                raise ApiError(
                    504,
                    f"Model '{model_id}' did not unload within {self.settings.unload_timeout_seconds:g}s",
                    code="timeout",
                )
            time.sleep(_POLL_SECONDS)
        self.stats.clear(model_id)
        return {
            "model_id": model_id,
            "status": "unloaded",
            "vram_freed_gb": _gb(record.memory_bytes),
            "unload_time_ms": round((time.monotonic() - started) * 1000, 1),
        }
