"""Bodies of ``GET /health``, ``GET /internal/diagnostics`` and ``GET /v1/queue/stats``.

Their views build the bodies themselves; these schemas document them (nested parts list their main fields and
leave room for more: ``unknown = EXCLUDE`` documents no ``additionalProperties: false``).
"""

from __future__ import annotations

from marshmallow import fields

from web.schemas.fields import OpenSchema


class ProbeSchema(OpenSchema):
    verdict = fields.String(metadata={"description": "answering, busy, starting or unresponsive"})
    age_seconds = fields.Float(
        allow_none=True, metadata={"description": "Since the worker last answered: its probe, or a request"}
    )
    answered_by = fields.String(
        allow_none=True,
        metadata={"description": "probe, or request: a request answered within the probe interval replaces a probe"},
    )
    ms = fields.Float(allow_none=True, metadata={"description": "How long the last health probe took"})
    error = fields.String(allow_none=True)


class HealthModelSchema(OpenSchema):
    id = fields.String()
    status = fields.String()
    workers = fields.Integer()
    warmup_completed = fields.Boolean()
    engine_stalled = fields.Boolean()
    stalled_seconds = fields.Float()
    probe = fields.Nested(ProbeSchema, allow_none=True)
    nodes = fields.List(fields.String(), metadata={"description": "the node of each live worker"})
    error = fields.String(allow_none=True)


class HealthModelsSchema(OpenSchema):
    loaded_count = fields.Integer()
    models_healthy = fields.Boolean()
    failed = fields.List(fields.String())
    models = fields.List(fields.Nested(HealthModelSchema))


class PersistenceSchema(OpenSchema):
    mongodb_connected = fields.Boolean()
    redis_connected = fields.Boolean()
    vector_db_connected = fields.Boolean()


class HealthNodeSchema(OpenSchema):
    name = fields.String()
    host = fields.String()
    backend = fields.String(metadata={"description": "metal, cuda or cpu"})
    budget_gb = fields.Float(allow_none=True, metadata={"description": "MODEL_MEMORY_BUDGET_GB; null: none"})
    held_gb = fields.Float(metadata={"description": "memory its live workers hold"})
    models_allowed = fields.String(metadata={"description": "NODE_MODELS"})
    models = fields.List(fields.String(), metadata={"description": "the model of each live worker on the node"})
    up_seconds = fields.Float()


class HealthSchema(OpenSchema):
    status = fields.String(metadata={"description": "ok, or error"})
    timestamp = fields.String()
    model_id = fields.String()
    model_status = fields.String()
    models_healthy = fields.Boolean()
    warmup_enabled = fields.Boolean()
    warmup_completed = fields.Boolean()
    models = fields.Nested(HealthModelsSchema)
    nodes = fields.List(fields.Nested(HealthNodeSchema), metadata={"description": "the running nodes"})
    persistence = fields.Nested(PersistenceSchema)
    services = fields.Dict(keys=fields.String(), values=fields.Boolean())
    latency_ms = fields.Float()
    request_id = fields.String()


class DiagnosticsSchema(OpenSchema):
    timestamp = fields.String()
    uptime_seconds = fields.Float()
    system = fields.Dict()
    resources = fields.Dict()
    models = fields.Dict()
    queues = fields.Dict()
    jobs = fields.Dict(keys=fields.String(), values=fields.Integer())
    rag = fields.Dict()
    errors = fields.Dict()
    reconciler = fields.Dict(metadata={"description": "last_run_at (ISO time) and period_seconds"})
    persistence = fields.Nested(PersistenceSchema)
    request_id = fields.String()


class QueueStatsSchema(OpenSchema):
    queues = fields.Dict(keys=fields.String(), values=fields.Dict())
    request_id = fields.String()


class CapabilityModelSchema(OpenSchema):
    id = fields.String()
    capabilities = fields.List(fields.String())
    context_length = fields.Integer(allow_none=True)
    vram_usage_gb = fields.Float()
    status = fields.String()


class CapabilitiesSchema(OpenSchema):
    capabilities = fields.Dict(keys=fields.String(), values=fields.List(fields.String()))
    models = fields.List(fields.Nested(CapabilityModelSchema))
    request_id = fields.String()


STREAMED = {
    "responses": {
        "200": {
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string", "description": "Server-sent events, with ``stream: true``"}
                }
            }
        }
    }
}
"""``@blp.doc(**STREAMED)``: the 200 of a route that streams server-sent events when asked to."""
