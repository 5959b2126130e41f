"""Loading and unloading models at runtime, for the API: validate, make room, record the wish, wait for it.

The API process never starts a worker itself: it writes the desired state to
the registry and waits until the supervisor and the worker have made it true
(or failed, or the deadline passed). Nothing here imports mlx.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from redis.exceptions import LockError, RedisError

from config.errors import ApiError
from config.model_types import SERVED_TYPES, TYPE_NAMES
from config.settings import Settings
from models import hub, registry
from models.catalog import ModelSpec, load_catalog, served_path
from models.liveness import Liveness, user_requests
from models.nodes import PLACEMENT_LOCK_SECONDS, NodeBeats
from models.placement import Holding, gb, place
from models.stats import ModelStats

log = logging.getLogger(__name__)

_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,199}$")
_WEIGHT_SUFFIXES = (".safetensors", ".npz", ".gguf")
_POLL_SECONDS = 0.2


def weights_bytes(path: Path) -> int:
    """Bytes of weight files in ``path``: the memory a float model will take, near enough to plan with."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES))


def serving_bytes(model_type: str, settings: Settings) -> int:
    """What a replica takes beyond its weights once it serves: a language model's KV budget and prompt cache."""
    return int((settings.engine_kv_budget_gb + settings.prompt_cache_gb) * 1e9) if model_type == "lm" else 0


def held_bytes(record: registry.ModelRecord, settings: Settings) -> int:
    """What a replica of the model holds: its weights (measured once loaded; before, as its load planned them:
    a Hugging Face model still downloading has no files to count yet), its LoRA adapters and what it serves with."""
    weights = record.memory_bytes or record.planned_bytes or weights_bytes(Path(record.path))
    adapters = sum(int(a.get("memory_bytes", 0)) for a in record.adapters or [])
    return weights + adapters + serving_bytes(record.model_type, settings)


def node_holdings(
    records: list[registry.ModelRecord],
    settings: Settings,
    exclude: str | None = None,
    idle: Callable[[registry.ModelRecord], bool] = lambda _record: False,
    last_used: Callable[[registry.ModelRecord], float] = lambda _record: 0.0,
) -> dict[str, list[Holding]]:
    """What the models loading or loaded hold on each node (a model's replicas on one node count together)."""
    held: dict[str, list[Holding]] = {}
    for record in records:
        if record.status not in ("loading", "loaded") or record.model_id == exclude:
            continue
        size, is_idle, used_at = held_bytes(record, settings), idle(record), last_used(record)
        for node, count in Counter(record.nodes).items():
            held.setdefault(node, []).append(Holding(record.model_id, size * count, is_idle, used_at))
    return held


def _refuse_existing(model_id: str) -> None:
    """The 409 for a model id that is taken (a failed model's id may be loaded again)."""
    existing = registry.get_record(model_id)
    if existing is not None and existing.status != "failed":
        raise ApiError(
            409,
            f"Model '{model_id}' already exists (status {existing.status})",
            code="model_already_loaded",
            param="model_id",
        )


class ModelLifecycle:
    def __init__(
        self,
        settings: Settings,
        liveness: Liveness,
        stats: ModelStats,
        queue_depth: Callable[[str], int],
        nodes: NodeBeats,
    ) -> None:
        self.settings = settings
        self.liveness = liveness
        self.nodes = nodes
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
        node: str | None = None,
        replicas: int = 1,
        kv_bits: int | None = None,
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
        if kv_bits is not None and model_type != "lm":
            raise ApiError(
                400,
                f"kv_bits quantises a language model's KV cache; a {model_type} model has none",
                code="invalid_value",
                param="kv_bits",
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
        _refuse_existing(model_id)
        # A repo not in the cache: its size is asked of the Hub before anything is downloaded.
        need = weights_bytes(path) if path else hub.weights_on_hub(repo)
        metadata = dict(metadata or {})
        description = str(metadata.pop("description", "") or (spec.description if spec else ""))
        with self.placement():
            _refuse_existing(model_id)  # a load of the same id at the same moment may have registered it
            nodes = self.place(model_id, model_type, need + serving_bytes(model_type, self.settings), replicas, node)
            registered = registry.request_load(
                model_id,
                model_type,
                f"{hub.HUB_PREFIX}{repo}" if repo else path,  # each node serves a repo from its own copy
                context_length=context_length or (spec.context_length if spec else None),
                description=description,
                tags=registry.tags_for(model_type, path or Path(model_path), spec.tags if spec else ()),
                priority=priority,
                user_metadata=metadata,
                max_concurrency=max_concurrency,
                kv_bits=kv_bits or (spec.kv_bits if spec else None),
                nodes=nodes,
                replicas=replicas,
                pinned_node=node,
                planned_bytes=need,
            )
        if not registered:
            raise ApiError(409, f"Model '{model_id}' already exists", code="model_already_loaded", param="model_id")
        record = self._wait_for_load(model_id, started + self.settings.load_timeout_seconds)
        return {
            "model_id": model_id,
            "status": "loaded",
            "vram_usage_gb": gb(record.memory_bytes),
            "load_time_ms": round((time.monotonic() - started) * 1000, 1),
            "metadata": record.metadata(),
            "nodes": list(record.nodes),
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
            with self.placement():
                record = registry.get_record(model_id)  # a request at the same moment may have placed it
                if record is None or record.status == "failed":
                    path = served_path(self.settings, spec)
                    need = weights_bytes(path) + serving_bytes(spec.model_type, self.settings)
                    nodes = self.place(model_id, spec.model_type, need)
                    if registry.request_catalog_load(spec, path, nodes):
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

    def busy(self, model_id: str) -> bool:
        workers = self.liveness.workers(model_id)
        return any(user_requests(w) for w in workers) or self.queue_depth(model_id) > 0

    def _all_serving(self, record: registry.ModelRecord) -> bool:
        """Whether every placed replica of the model has a live worker (one still starting may not be evicted:
        before it beats, nothing could tell when it is gone)."""
        return len(self.liveness.workers(record.model_id)) >= len(record.nodes)

    def holdings(self, exclude: str) -> dict[str, list[Holding]]:
        """What each node's models hold, ``exclude`` left out; idle: loaded, no request running or waiting."""
        return node_holdings(
            registry.list_records(),
            self.settings,
            exclude,
            idle=lambda r: r.status == "loaded" and self._all_serving(r) and not self.busy(r.model_id),
            last_used=lambda r: self.stats.last_used(r.model_id) or (r.loaded_at.timestamp() if r.loaded_at else 0.0),
        )

    @contextmanager
    def placement(self) -> Iterator[None]:
        """One placement at a time in the deployment, from counting free room to registering the model (see
        ``NodeBeats.placing``), the lock renewed while evictions are waited for; 503 when another placement held it
        for longer than a load may take."""
        lock = self.nodes.placing()
        if not lock.acquire(blocking_timeout=self.settings.load_timeout_seconds):
            raise ApiError(
                503,
                f"Other models have been placed on the nodes for over {self.settings.load_timeout_seconds:g}s;"
                " try again",
                code="service_unavailable",
            )
        done = threading.Event()

        def renew() -> None:
            while not done.wait(PLACEMENT_LOCK_SECONDS / 3):
                with suppress(LockError, RedisError):
                    lock.reacquire()

        threading.Thread(target=renew, name="placement-lock", daemon=True).start()
        try:
            yield
        finally:
            done.set()
            with suppress(LockError, RedisError):  # expired (Redis lost a while): it is free already
                lock.release()

    def place(
        self, model_id: str, model_type: str, need: int, replicas: int = 1, pinned: str | None = None
    ) -> list[str]:
        """The nodes for the replicas of a model about to load (``pinned``: that node only), once the idle models
        (least recently used first) that make room on them are unloaded. 400 for a node that is not running or
        may not serve the model, 503 when no running node may serve it, 503 ``insufficient_vram`` when it cannot
        fit."""
        live = self.nodes.live()
        if pinned is not None:
            node = live.get(pinned)
            if node is None:
                running = ", ".join(live) or "none"
                raise ApiError(
                    400, f"Node '{pinned}' is not running (running: {running})", code="invalid_value", param="node"
                )
            if not node.allows(model_id, model_type):
                raise ApiError(
                    400,
                    f"Node '{pinned}' does not serve '{model_id}' (its NODE_MODELS: {node.models})",
                    code="invalid_value",
                    param="node",
                )
            candidates = [node]
        else:
            candidates = [node for node in live.values() if node.allows(model_id, model_type)]
            if not candidates:
                running = ", ".join(f"{n.name} ({n.models})" for n in live.values()) or "none is running"
                raise ApiError(
                    503,
                    f"No running node may serve '{model_id}' (nodes and their NODE_MODELS: {running})",
                    code="model_unavailable",
                    param="model_id",
                )
        placement = place(need, replicas, candidates, self.holdings(exclude=model_id))
        leaving: dict[str, set[str]] = {}
        for node_name, model_ids in placement.evict.items():
            for evicted in model_ids:
                leaving.setdefault(evicted, set()).add(node_name)
        for evicted, nodes in leaving.items():
            log.info(
                "unloading the idle model %s on %s to make room for %s", evicted, ", ".join(sorted(nodes)), model_id
            )
            self.evict(evicted, nodes)
        return placement.nodes

    def evict(self, model_id: str, nodes: set[str]) -> None:
        """Takes the idle ``model_id``'s replicas off ``nodes`` and waits until their workers are gone: unloaded
        when it has no replica elsewhere; otherwise it goes on serving on its other nodes, and the replicas taken
        off wait (placed again by the supervisors) for a node with room."""
        record = registry.get_record(model_id)
        if record is None:
            return
        rest = [name for name in record.nodes if name not in nodes]
        if not rest:
            self.unload(model_id, force=False)
            return
        if not registry.move_replicas(model_id, list(record.nodes), rest, restarting=False):
            raise ApiError(409, f"Model '{model_id}' moved while room was being made; try again", code="conflict")
        deadline = time.monotonic() + self.settings.unload_timeout_seconds
        while any(worker.get("node") in nodes for worker in self.liveness.workers(model_id)):
            if time.monotonic() > deadline:
                raise ApiError(
                    504,
                    f"The replicas of '{model_id}' on {', '.join(sorted(nodes))} did not stop within"
                    f" {self.settings.unload_timeout_seconds:g}s",
                    code="timeout",
                )
            time.sleep(_POLL_SECONDS)

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
            "vram_freed_gb": gb(record.memory_bytes),
            "unload_time_ms": round((time.monotonic() - started) * 1000, 1),
        }
