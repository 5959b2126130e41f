"""Model listing bodies (OpenAI's ``list`` of ``model`` objects, with the registry's metadata)."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from config.model_types import KV_BITS, TYPE_NAMES
from web.schemas.fields import storable_keys


class ModelSchema(Schema):
    id = fields.String()
    object = fields.String()
    created = fields.Integer()
    owned_by = fields.String()
    family = fields.String()
    type = fields.String()
    context_length = fields.Integer(allow_none=True)
    tags = fields.List(fields.String())
    tier = fields.String()
    description = fields.String()
    vram_usage_gb = fields.Float()
    status = fields.String()
    workers = fields.Integer()
    replicas = fields.Integer(metadata={"description": "worker processes wanted, across nodes"})
    nodes = fields.List(fields.String(), metadata={"description": "the node of each live worker"})
    error = fields.String(allow_none=True)
    parent = fields.String(metadata={"description": "for a LoRA adapter ('<model id>:<adapter id>'): its base model"})
    request_id = fields.String()


class ModelListSchema(Schema):
    object = fields.String()
    data = fields.List(fields.Nested(ModelSchema))
    request_id = fields.String()


class LoadModelRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model_path = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    model_type = fields.String(required=True, validate=validate.OneOf(TYPE_NAMES))
    model_id = fields.String(validate=validate.Length(min=1, max=200))
    context_length = fields.Integer(validate=validate.Range(min=16, max=10_000_000))
    max_concurrency = fields.Integer(
        validate=validate.Range(min=1, max=256),
        metadata={"description": "requests its worker batches together (default: MAX_CONCURRENCY)"},
    )
    kv_bits = fields.Integer(
        validate=validate.OneOf(KV_BITS),
        metadata={"description": "a language model's KV cache quantised to 4 or 8 bits (default: full precision)"},
    )
    priority = fields.String(load_default="normal", validate=validate.OneOf(("low", "normal", "high")))
    metadata = fields.Dict(keys=fields.String(), validate=storable_keys)
    node = fields.String(
        validate=validate.Length(min=1, max=200),
        metadata={"description": "the node to run on (default: the nodes with the most room)"},
    )
    replicas = fields.Integer(
        load_default=1,
        validate=validate.Range(min=1, max=16),
        metadata={"description": "worker processes of the model, spread across nodes, all consuming its queue"},
    )


class ModelMetadataSchema(Schema):
    id = fields.String()
    family = fields.String()
    type = fields.String()
    context_length = fields.Integer(allow_none=True)
    kv_bits = fields.Integer(metadata={"description": "the bits of its quantised KV cache, when loaded with them"})
    tags = fields.List(fields.String())
    tier = fields.String()
    description = fields.String()
    created_at = fields.Integer()
    user = fields.Dict()


class LoadModelResponseSchema(Schema):
    model_id = fields.String()
    status = fields.String()
    vram_usage_gb = fields.Float()
    load_time_ms = fields.Float()
    metadata = fields.Nested(ModelMetadataSchema)
    nodes = fields.List(fields.String(), metadata={"description": "the node of each replica"})
    request_id = fields.String()


class UnloadQuerySchema(Schema):
    force = fields.Boolean(load_default=False)


class UnloadResponseSchema(Schema):
    model_id = fields.String()
    status = fields.String()
    vram_freed_gb = fields.Float()
    unload_time_ms = fields.Float()
    request_id = fields.String()


class ModelInfoSchema(Schema):
    model_id = fields.String()
    status = fields.String()
    metadata = fields.Nested(ModelMetadataSchema)
    vram_usage_gb = fields.Float()
    load_time = fields.String(allow_none=True)
    last_used = fields.String(allow_none=True)
    request_count = fields.Integer()
    workers = fields.Integer()
    replicas = fields.Integer(metadata={"description": "worker processes wanted, across nodes"})
    nodes = fields.List(fields.String(), metadata={"description": "the node of each live worker"})
    placed_on = fields.List(fields.String(), metadata={"description": "the node each replica is placed on"})
    failed_on = fields.List(
        fields.Dict(),
        metadata={"description": "nodes where a replica failed while others served on (node, error)"},
    )
    folders = fields.List(
        fields.Dict(),
        metadata={"description": "for a Hugging Face model, where each node keeps its copy (node, folder)"},
    )
    error = fields.String(allow_none=True)
    download = fields.Dict(allow_none=True, metadata={"description": "repo, bytes_done, bytes_total while fetched"})
    request_id = fields.String()


class WorkerMemorySchema(Schema):
    node = fields.String()
    pid = fields.Integer()
    resident_memory_bytes = fields.Integer(
        allow_none=True, metadata={"description": "The worker process's resident memory (RSS) at its last heartbeat"}
    )


class ModelStatsSchema(Schema):
    model_id = fields.String()
    request_count = fields.Integer()
    total_tokens_processed = fields.Integer()
    avg_latency_ms = fields.Float()
    p50_latency_ms = fields.Float()
    p95_latency_ms = fields.Float()
    p99_latency_ms = fields.Float()
    error_count = fields.Integer()
    last_error = fields.String(allow_none=True)
    last_error_message = fields.String(allow_none=True)
    last_used = fields.String(allow_none=True)
    vram_usage_gb = fields.Float()
    workers = fields.List(
        fields.Nested(WorkerMemorySchema),
        metadata={"description": "The model's live worker processes and the memory each holds"},
    )
    request_id = fields.String()


class WarmupRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    prompt = fields.String(load_default="Hello world", validate=validate.Length(max=100_000))
    max_length = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1_000_000))


class WarmupResponseSchema(Schema):
    model_id = fields.String()
    status = fields.String()
    warmup_time_ms = fields.Float()
    prompt_tokens = fields.Integer()
    request_id = fields.String()
