"""The model registry in MongoDB: each model's desired and actual state, metadata and measured memory.

The API writes the desired state (``loaded`` / ``unloaded``); the supervisor and
the workers move the actual ``status`` (loading -> loaded | failed, unloading).
Updates are conditional on the current status where a race is possible, so a
late writer cannot undo a newer decision.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mongoengine as me

from config.model_types import model_type as model_type_row
from models.catalog import ModelSpec, family_of

TIER = "3A"
STATUSES = ("loading", "loaded", "failed", "unloading")


class ModelRecord(me.Document):
    # Not strict: a process of an older version (another node, mid-upgrade) reads records a newer one wrote.
    meta = {"collection": "models", "indexes": ["status", "desired"], "strict": False}

    model_id = me.StringField(primary_key=True)
    model_type = me.StringField(required=True)
    path = me.StringField(required=True)
    family = me.StringField(default="unknown")
    tags = me.ListField(me.StringField())
    tier = me.StringField(default=TIER)
    context_length = me.IntField()
    max_concurrency = me.IntField()
    """Requests this model's worker batches together; unset means the ``MAX_CONCURRENCY`` setting."""
    kv_bits = me.IntField()
    """A language model's KV cache quantised to 4 or 8 bits (``models.kv_quantized``); unset: full precision."""
    description = me.StringField(default="")
    priority = me.StringField(default="normal")
    user_metadata = me.DictField()
    origin = me.StringField(default="api")
    created = me.IntField(required=True)
    desired = me.StringField(choices=("loaded", "unloaded"), default="loaded")
    force_unload = me.BooleanField(default=False)
    status = me.StringField(choices=STATUSES, required=True)
    error = me.StringField()
    memory_bytes = me.IntField(default=0)
    planned_bytes = me.IntField(default=0)
    """A replica's weights as the load planned them: on disk, or on the Hub for a model not downloaded yet."""
    load_time_ms = me.FloatField()
    loaded_at = me.DateTimeField()
    replicas = me.IntField(default=1)
    nodes = me.ListField(me.StringField())
    """The node of each replica (a node may appear more than once); fewer than ``replicas`` while some wait for a
    node with room."""
    pinned_node = me.StringField()
    """The node the load asked for: the model is never placed elsewhere."""
    failed_on = me.ListField(me.DictField())
    """Nodes where a replica failed for good while replicas on others served on (``node``, ``error``, ``at``):
    no replica is placed there again."""
    folders = me.ListField(me.DictField())
    """Where each node keeps the files of a model fetched from the Hub (``node``, ``folder``): ``path`` stays the
    ``hf://`` source, so a replica placed on another node fetches its own copy."""
    download = me.DictField()
    """While a Hugging Face model is fetched: ``repo``, ``bytes_done`` and ``bytes_total``."""
    adapters = me.ListField(me.DictField())
    """The LoRA adapters requests may name (``<model id>:<adapter id>``): ``adapter_id``, ``source`` (a folder or
    ``hf://<repo id>``), ``rank``, ``layers``, ``memory_bytes`` (each worker holds it once), ``created``."""
    updated_at = me.DateTimeField()

    def metadata(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "family": self.family,
            "type": self.model_type,
            "context_length": self.context_length,
            **({"kv_bits": self.kv_bits} if self.kv_bits else {}),
            "tags": list(self.tags),
            "tier": self.tier,
            "description": self.description,
            "created_at": self.created,
            **({"user": self.user_metadata} if self.user_metadata else {}),
        }


def tags_for(model_type: str, path: Path, extra: tuple[str, ...] | list[str] = ()) -> list[str]:
    """``local``, the type's tags, ``quantized`` when the folder's config says so, then ``extra``."""
    row = model_type_row(model_type)
    tags = ["local", *(row.tags if row else ())]
    config = path / "config.json"
    if config.exists() and '"quantization"' in config.read_text(errors="replace"):
        tags.append("quantized")
    return list(dict.fromkeys([*tags, *extra]))


def request_load(
    model_id: str,
    model_type: str,
    path: Path | str,
    *,
    context_length: int | None = None,
    description: str = "",
    tags: list[str] | None = None,
    priority: str = "normal",
    user_metadata: dict | None = None,
    origin: str = "api",
    max_concurrency: int | None = None,
    kv_bits: int | None = None,
    nodes: list[str] | None = None,
    replicas: int = 1,
    pinned_node: str | None = None,
    planned_bytes: int = 0,
) -> bool:
    """Records the wish to serve ``model_id``; False when it is already loading, loaded or unloading.

    A failed record is replaced, so a model can be loaded again after its files are fixed.
    """
    now = datetime.now(UTC)
    fields = dict(
        model_type=model_type,
        path=str(path),
        family=family_of(model_id),
        tags=tags if tags is not None else tags_for(model_type, Path(path)),
        tier=TIER,
        context_length=context_length,
        max_concurrency=max_concurrency,
        kv_bits=kv_bits,
        replicas=replicas,
        nodes=list(nodes or []),
        pinned_node=pinned_node,
        planned_bytes=planned_bytes,
        description=description,
        priority=priority,
        user_metadata=user_metadata or {},
        origin=origin,
        desired="loaded",
        force_unload=False,
        status="loading",
        memory_bytes=0,
        updated_at=now,
    )
    replaced = ModelRecord.objects(model_id=model_id, status="failed").update_one(
        unset__error=True, set__created=int(time.time()), **{f"set__{k}": v for k, v in fields.items()}
    )
    if replaced:
        return True
    try:
        ModelRecord(model_id=model_id, created=int(time.time()), **fields).save(force_insert=True)
    except me.NotUniqueError:
        return False
    return True


def request_catalog_load(spec: ModelSpec, path: Path, nodes: list[str] | None = None) -> bool:
    """``request_load`` of a catalog model whose prepared folder is ``path``."""
    return request_load(
        spec.model_id,
        spec.model_type,
        path,
        context_length=spec.context_length,
        kv_bits=spec.kv_bits,
        description=spec.description,
        tags=tags_for(spec.model_type, path, spec.tags),
        origin="catalog",
        nodes=nodes,
    )


def move_replicas(model_id: str, before: list[str], after: list[str], restarting: bool) -> bool:
    """Sets the nodes of ``model_id``'s replicas to ``after`` if they are still ``before`` (another supervisor may
    have moved them first); ``restarting``: none of its workers is left, it is ``loading`` again."""
    changes: dict = {"set__nodes": after, "set__updated_at": datetime.now(UTC)}
    if restarting:
        changes["set__status"] = "loading"
    same = me.Q(nodes=before) if before else me.Q(nodes__size=0) | me.Q(nodes__exists=False)
    return bool(ModelRecord.objects(same, model_id=model_id, desired="loaded").update_one(**changes))


def record_loaded(model_id: str, memory_bytes: int, load_time_ms: float, context_length: int) -> None:
    now = datetime.now(UTC)
    ModelRecord.objects(model_id=model_id, status__in=("loading", "loaded")).update_one(
        set__status="loaded",
        unset__error=True,
        set__memory_bytes=memory_bytes,
        set__load_time_ms=load_time_ms,
        set__context_length=context_length,
        set__loaded_at=now,
        set__updated_at=now,
    )


def record_download(model_id: str, repo: str, bytes_done: int, bytes_total: int) -> None:
    """Progress of the download of a loading model (and a sign of life: the loading deadline counts from it)."""
    ModelRecord.objects(model_id=model_id, status="loading").update_one(
        set__download={"repo": repo, "bytes_done": bytes_done, "bytes_total": bytes_total},
        set__updated_at=datetime.now(UTC),
    )


def record_downloaded(model_id: str, node: str, folder: Path) -> None:
    """The model's files are in ``node``'s cache at ``folder``."""
    records = ModelRecord.objects(model_id=model_id)
    records.update_one(__raw__={"$pull": {"folders": {"node": node}}})
    records.update_one(push__folders={"node": node, "folder": str(folder)}, set__updated_at=datetime.now(UTC))


def record_restarting(model_id: str) -> None:
    ModelRecord.objects(model_id=model_id, status="loaded", desired="loaded").update_one(
        set__status="loading", set__updated_at=datetime.now(UTC)
    )


def record_failed(model_id: str, error: str, node: str | None = None, serving_elsewhere: bool = False) -> None:
    """The model failed to load, or its worker kept crashing. On ``node`` while replicas on other nodes serve
    (``serving_elsewhere``), the failure is that node's: its replicas are taken off it, none is placed there again,
    and the model serves on (its queued jobs wait for it). Otherwise the model has failed (``status``)."""
    moment = datetime.now(UTC)
    if node is not None and serving_elsewhere:
        ModelRecord.objects(model_id=model_id, status__in=("loading", "loaded")).update_one(
            pull__nodes=node, push__failed_on={"node": node, "error": error, "at": moment}, set__updated_at=moment
        )
        return
    ModelRecord.objects(model_id=model_id, status__in=("loading", "loaded")).update_one(
        set__status="failed", set__error=error, set__updated_at=moment
    )


def failed_nodes(record: ModelRecord) -> set[str]:
    """The nodes where the model failed while it served elsewhere (``record_failed``)."""
    return {entry["node"] for entry in record.failed_on or []}


def request_unload(model_id: str, force: bool) -> bool:
    """Marks ``model_id`` to be stopped; False when it is not registered."""
    return bool(
        ModelRecord.objects(model_id=model_id).update_one(
            set__desired="unloaded",
            set__force_unload=force,
            set__status="unloading",
            set__updated_at=datetime.now(UTC),
        )
    )


def forget(model_id: str) -> None:
    ModelRecord.objects(model_id=model_id, desired="unloaded").delete()


def add_adapter(model_id: str, adapter: dict[str, Any]) -> bool:
    """Records a LoRA adapter of a loaded model; False when the model is gone or has one of that id already."""
    return bool(
        ModelRecord.objects(model_id=model_id, adapters__adapter_id__ne=adapter["adapter_id"]).update_one(
            push__adapters=adapter
        )
    )


def remove_adapter(model_id: str, adapter_id: str) -> bool:
    """Forgets a LoRA adapter; False when the model has none of that id."""
    return bool(
        ModelRecord.objects(model_id=model_id, adapters__adapter_id=adapter_id).update_one(
            pull__adapters={"adapter_id": adapter_id}
        )
    )


def adapter_of(record: ModelRecord, adapter_id: str) -> dict[str, Any] | None:
    return next((a for a in record.adapters or [] if a.get("adapter_id") == adapter_id), None)


def get_record(model_id: str) -> ModelRecord | None:
    return ModelRecord.objects(model_id=model_id).first()


def list_records() -> list[ModelRecord]:
    return list(ModelRecord.objects.order_by("created", "model_id"))
