"""MCP job bodies (specification section 5.1-5.4); ``input`` is validated by the schema of its operation."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates

from tasks.job_queue import OPERATIONS
from tasks.job_store import PRIORITIES, STATUSES
from web.schemas.audio import GRANULARITIES, RESPONSE_FORMATS
from web.schemas.chat import ChatCompletionRequestSchema, SamplingSchema, generation_payload
from web.schemas.embeddings import MAX_INPUTS
from web.schemas.fields import EmbeddingInput, storable_keys
from web.schemas.fusion import OrchestrateSchema
from web.schemas.images import ImageOptionsSchema
from web.schemas.rag import RagQuerySchema, rag_query_input

MAX_JOB_FILE_CHARS = 14 * 1024 * 1024
"""Base64 a job may carry in one file (about 10 MiB): the job is a MongoDB document, at most 16 MiB."""


class CompletionInputSchema(SamplingSchema):
    prompt = fields.String(required=True, validate=validate.Length(min=1))


class EmbedInputSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    input = EmbeddingInput(required=True, max_items=MAX_INPUTS, allow_empty_strings=False)
    dimensions = fields.Integer(validate=validate.Range(min=1))


class TranscribeInputSchema(Schema):
    """A transcription job: the audio file base64-encoded in ``file``, and the options of
    ``POST /v1/audio/transcriptions``."""

    class Meta:
        unknown = EXCLUDE

    file = fields.String(required=True, validate=validate.Length(min=4, max=MAX_JOB_FILE_CHARS))
    language = fields.String(validate=validate.Length(min=2, max=8))
    prompt = fields.String(validate=validate.Length(max=4000))
    response_format = fields.String(load_default="json", validate=validate.OneOf(RESPONSE_FORMATS))
    temperature = fields.Float(load_default=0.0, validate=validate.Range(min=0, max=1))
    timestamp_granularities = fields.List(fields.String(validate=validate.OneOf(GRANULARITIES)), load_default=list)

    @validates("file")
    def _base64(self, value: str, **_kwargs: Any) -> None:
        try:
            base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValidationError("Must be the audio file's bytes in base64.") from None


class ImageGenInputSchema(ImageOptionsSchema):
    """An image job: the fields of ``POST /v1/images/generations`` (the model is the job's), and for an image-edit
    model the images (and mask) base64-encoded."""

    model = fields.String()
    response_format = fields.String(load_default="b64_json", validate=validate.OneOf(("b64_json",)))
    images = fields.List(fields.String(validate=validate.Length(min=4, max=MAX_JOB_FILE_CHARS)), load_default=list)
    mask = fields.String(validate=validate.Length(min=4, max=MAX_JOB_FILE_CHARS))


def _fusion_input() -> Schema:
    """A workflow run as a job: the body of ``POST /api/fusion/orchestrate`` without what makes it a job."""
    return OrchestrateSchema(exclude=("async_", "priority", "callback_url"))


def _chat_input() -> Schema:
    return ChatCompletionRequestSchema(exclude=("model", "stream", "stream_options"))


def _rag_query_input() -> Schema:
    return RagQuerySchema(exclude=("model_id", "stream"))


INPUT_SCHEMAS = {
    "chat": _chat_input,
    "completion": CompletionInputSchema,
    "embed": EmbedInputSchema,
    "transcribe": TranscribeInputSchema,
    "image_gen": ImageGenInputSchema,
    "fusion": _fusion_input,
    "rag_query": _rag_query_input,
}
SUBMITTED_ELSEWHERE = {
    "rag_ingest": "POST /api/rag/ingest with async=true (a job cannot carry files)",
    "batch": "POST /v1/batches",
}


def worker_input(operation: str, loaded: dict[str, Any], model_id: str) -> dict[str, Any]:
    """What the worker needs of a validated input."""
    if operation == "embed":
        return {"input": loaded["input"], "dimensions": loaded.get("dimensions")}
    if operation == "rag_query":
        return rag_query_input(loaded, model_id)
    if operation in ("transcribe", "fusion"):
        return loaded
    if operation == "image_gen":
        fields_ = ("prompt", "n", "width", "height", "seed", "steps", "images", "mask")
        return {name: loaded[name] for name in fields_ if loaded.get(name) not in (None, [])}
    return generation_payload(loaded)


class JobRequestSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    model_id = fields.String(required=True, validate=validate.Length(min=1, max=200))
    operation = fields.String(required=True, validate=validate.OneOf(OPERATIONS))
    input = fields.Dict(required=True, keys=fields.String())
    callback_url = fields.String(allow_none=True, validate=validate.Length(min=1, max=2000))
    callback_secret = fields.String(allow_none=True, validate=validate.Length(min=8, max=200))
    priority = fields.String(load_default="normal", validate=validate.OneOf(tuple(PRIORITIES)))
    metadata = fields.Dict(keys=fields.String(), load_default=dict, validate=storable_keys)

    @post_load
    def _validate_input(self, data: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
        if data["operation"] in SUBMITTED_ELSEWHERE:
            raise ValidationError(
                f"{data['operation']} jobs are submitted with {SUBMITTED_ELSEWHERE[data['operation']]}.", "operation"
            )
        schema = INPUT_SCHEMAS.get(data["operation"])
        if schema is not None:
            try:
                loaded = schema().load(data["input"])
            except ValidationError as exc:
                raise ValidationError({"input": exc.messages}) from None
            data["input"] = worker_input(data["operation"], loaded, data["model_id"])
        return data


class JobAcceptedSchema(Schema):
    job_id = fields.String()
    status = fields.String()
    created_at = fields.String()
    estimated_completion_ms = fields.Integer()
    position_in_queue = fields.Integer()
    request_id = fields.String()


class JobSchema(Schema):
    job_id = fields.String()
    status = fields.String()
    model_id = fields.String()
    operation = fields.String()
    priority = fields.String()
    created_at = fields.String()
    started_at = fields.String()
    completed_at = fields.String()
    failed_at = fields.String()
    cancelled_at = fields.String()
    latency_ms = fields.Integer()
    attempts = fields.Integer()
    position_in_queue = fields.Integer()
    estimated_completion_ms = fields.Integer()
    progress = fields.Float()
    progress_detail = fields.Dict(
        metadata={
            "description": "What a running job has done. An ingest: file, file_number, files, chunks_embedded, "
            "chunks. A workflow: steps_done, steps, and execution_trace, the trace of the steps run so far."
        }
    )
    result = fields.Dict()
    error = fields.String()
    error_code = fields.String()
    metadata = fields.Dict()
    submitted_request_id = fields.String(metadata={"description": "The request that submitted the job"})
    request_id = fields.String()


class JobListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    status = fields.String(validate=validate.OneOf(STATUSES))
    model_id = fields.String(validate=validate.Length(min=1, max=200))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    offset = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000_000))
    sort_by = fields.String(load_default="created_at", validate=validate.OneOf(("created_at", "completed_at")))
    order = fields.String(load_default="desc", validate=validate.OneOf(("asc", "desc")))


class JobListSchema(Schema):
    jobs = fields.List(fields.Nested(JobSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()
    request_id = fields.String()


class JobCancelledSchema(Schema):
    job_id = fields.String()
    status = fields.String()
    cancelled_at = fields.String()
    request_id = fields.String()
