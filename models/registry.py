"""The model registry in MongoDB: each model's metadata, state and measured memory."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import mongoengine as me

from config.settings import Settings
from models.catalog import ModelSpec

TIER = "3A"
STATUSES = ("loading", "loaded", "failed", "unloading", "stopped")


class ModelRecord(me.Document):
    meta = {"collection": "models", "indexes": ["status"]}

    model_id = me.StringField(primary_key=True)
    model_type = me.StringField(required=True)
    family = me.StringField(default="unknown")
    tags = me.ListField(me.StringField())
    tier = me.StringField(default=TIER)
    context_length = me.IntField()
    description = me.StringField(default="")
    created = me.IntField(required=True)
    status = me.StringField(choices=STATUSES, required=True)
    error = me.StringField()
    memory_bytes = me.IntField(default=0)
    load_time_ms = me.FloatField()
    loaded_at = me.DateTimeField()
    updated_at = me.DateTimeField()

    def metadata(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "family": self.family,
            "type": self.model_type,
            "context_length": self.context_length,
            "tags": list(self.tags),
            "tier": self.tier,
            "description": self.description,
            "created_at": self.created,
        }


def connect(settings: Settings) -> None:
    """Registers the default mongoengine connection (pymongo connects lazily, on first use)."""
    me.disconnect()
    me.connect(
        host=settings.mongodb_url,
        db=settings.database_name,
        serverSelectionTimeoutMS=3000,
        tz_aware=True,
        uuidRepresentation="standard",
    )


def record_loading(spec: ModelSpec, context_length: int | None = None) -> None:
    now = datetime.now(UTC)
    ModelRecord.objects(model_id=spec.model_id).update_one(
        upsert=True,
        set__model_type=spec.model_type,
        set__family=spec.family,
        set__tags=_tags(spec),
        set__tier=TIER,
        set__context_length=context_length or spec.context_length,
        set__description=spec.description,
        set__status="loading",
        unset__error=True,
        set__updated_at=now,
        set_on_insert__created=int(time.time()),
    )


def record_loaded(model_id: str, memory_bytes: int, load_time_ms: float, context_length: int) -> None:
    now = datetime.now(UTC)
    ModelRecord.objects(model_id=model_id).update_one(
        set__status="loaded",
        set__memory_bytes=memory_bytes,
        set__load_time_ms=load_time_ms,
        set__context_length=context_length,
        set__loaded_at=now,
        set__updated_at=now,
    )


def record_failed(model_id: str, error: str) -> None:
    ModelRecord.objects(model_id=model_id).update_one(
        set__status="failed", set__error=error, set__updated_at=datetime.now(UTC)
    )


def get_record(model_id: str) -> ModelRecord | None:
    return ModelRecord.objects(model_id=model_id).first()


def list_records() -> list[ModelRecord]:
    return list(ModelRecord.objects.order_by("created", "model_id"))


def _tags(spec: ModelSpec) -> list[str]:
    tags = list(spec.tags) or ["local"]
    if spec.weights_format in ("q4", "q8") and "quantized" not in tags:
        tags.append("quantized")
    return tags
