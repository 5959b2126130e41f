"""The OpenAI Batch API (``/v1/batches``): a batch is an MCP job (operation ``batch``) whose lines run on their
models' queues at the lowest priority (``tasks.batches``); its output and error files are files of the caller."""

from __future__ import annotations

from typing import Any

from flask import current_app, g
from flask.views import MethodView

from config.errors import ApiError
from tasks import batch_store, batches, file_store, job_store
from tasks.job_queue import JobQueue
from web.api import Blueprint
from web.batch_lines import prepare
from web.identity import current_caller
from web.schemas.batches import BatchCreateSchema, BatchListQuerySchema, BatchListSchema, BatchObjectSchema

blp = Blueprint("batches", __name__, url_prefix="/v1", description="OpenAI batches")


def submit(body: dict[str, Any]) -> batch_store.Batch:
    """Checks every line of the input file with its endpoint's schema, writes the prepared lines, records the
    batch and submits its job (at the ``low`` priority: its lines go below every job anyway)."""
    caller = current_caller()
    settings = current_app.extensions["settings"]
    stored = file_store.get(body["input_file_id"], caller.sees)
    if stored is None:
        raise ApiError(404, f"File '{body['input_file_id']}' not found", code="file_not_found", param="input_file_id")
    if stored.purpose != "batch":
        raise ApiError(
            400, f"File '{stored.file_id}' was uploaded for {stored.purpose}, not batch", param="input_file_id"
        )
    batch_id = batch_store.new_batch_id()
    lines = prepare(body["endpoint"], file_store.read(settings.data_dir, stored.file_id), g.request_id)
    batch_store.write_lines(settings.data_dir, batch_id, lines)
    metadata = body.get("metadata") or {}
    batch = batch_store.create(
        batch_id, body["endpoint"], stored.file_id, len(lines), metadata, caller.owner, g.request_id
    )
    model_id = batches.job_model([line["model"] for line in lines if "error" not in line], settings.default_chat_model)
    request = job_store.JobRequest(
        model_id=model_id,
        operation="batch",
        input={"batch_id": batch_id},
        priority="low",
        metadata={"batch_id": batch_id},
        request_id=g.request_id,
        owner=caller.owner,
    )
    try:
        accepted = job_queue().submit(request)
    except Exception:
        batch_store.remove(batch_id)
        batch_store.discard_lines(settings.data_dir, batch_id)
        raise
    batch_store.set_job(batch_id, accepted["job_id"])
    batch.job_id = accepted["job_id"]
    return batch


def job_queue() -> JobQueue:
    return current_app.extensions["jobs"]


@blp.route("/batches")
class Batches(MethodView):
    @blp.arguments(BatchCreateSchema)
    @blp.alt_response(200, schema=BatchObjectSchema, description="The batch, validating")
    @blp.alt_response(404, description="No such input file")
    def post(self, body: dict[str, Any]):
        return submit(body).public()

    @blp.arguments(BatchListQuerySchema, location="query")
    @blp.alt_response(200, schema=BatchListSchema, description="A page of the caller's batches, newest first")
    def get(self, query: dict[str, Any]):
        found, more = batch_store.search(current_caller().sees, query["after"], query["limit"])
        data = [batch.public() for batch in found]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}


@blp.route("/batches/<string:batch_id>")
class OneBatch(MethodView):
    @blp.alt_response(200, schema=BatchObjectSchema, description="The batch")
    @blp.alt_response(404, description="No such batch")
    def get(self, batch_id: str):
        return batches.find(batch_id, current_caller().sees).public()


@blp.route("/batches/<string:batch_id>/cancel")
class BatchCancel(MethodView):
    @blp.alt_response(200, schema=BatchObjectSchema, description="The batch, cancelling (or cancelled)")
    @blp.alt_response(404, description="No such batch")
    @blp.alt_response(409, description="The batch already ended")
    def post(self, batch_id: str):
        return batches.cancel(batch_id, current_caller().sees).public()
