"""RAG (specification section 4): ingest files into collections, answer questions from them with sources.

The view validates and stages; extraction, embedding, search and deletion run
as tasks on the ``rag`` queue (``tasks.rag_tasks``), the answer on the chat
model's queue. Collections and documents are read from MongoDB directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import current_app, g, jsonify, request
from flask.views import MethodView
from werkzeug.datastructures import FileStorage

from config.errors import ApiError
from config.model_types import RERANK
from config.settings import Settings
from rag import document_store
from rag.answer import messages, query_metadata
from tasks import rag_queue, staging
from tasks.job_store import JobRequest
from web.api import Blueprint, dispatcher
from web.identity import current_caller
from web.quotas import counted_events
from web.schemas.rag import (
    CollectionDeletedSchema,
    CollectionListSchema,
    CollectionSchema,
    DocumentDeletedSchema,
    IngestFormSchema,
    IngestResultSchema,
    RagAnswerSchema,
    RagQuerySchema,
    rag_query_input,
)
from web.sse import sse_response

blp = Blueprint(
    "rag", __name__, url_prefix="/api/rag", description="RAG: collections of documents, answers with sources"
)

FILE_FIELDS = ("files", "files[]", "file")
FORM_SLACK_BYTES = 1024 * 1024


def settings() -> Settings:
    return current_app.extensions["settings"]


@blp.before_request
def _room_for_uploads() -> None:
    if request.endpoint == "rag.Ingest":
        request.max_content_length = settings().rag_max_files * settings().rag_max_file_bytes + FORM_SLACK_BYTES


def uploaded_files() -> list[tuple[str, bytes]]:
    """The request's files with their bytes; 400 without any, 413 naming a file over the limit."""
    uploads: list[FileStorage] = [f for name in FILE_FIELDS for f in request.files.getlist(name)]
    if not uploads:
        raise ApiError(400, "Send at least one file in the 'files' form field", code="missing_files", param="files")
    limit = settings().rag_max_files
    if len(uploads) > limit:
        raise ApiError(
            400, f"At most {limit} files per ingest (got {len(uploads)})", code="too_many_files", param="files"
        )
    files = []
    for upload in uploads:
        name = upload.filename or "unnamed"
        data = upload.read(settings().rag_max_file_bytes + 1)
        if len(data) > settings().rag_max_file_bytes:
            raise ApiError(
                413,
                f"File '{name}' is over the {settings().rag_max_file_bytes} bytes a file may have",
                code="file_too_large",
                param="files",
            )
        files.append((name, data))
    return files


@blp.route("/ingest")
class Ingest(MethodView):
    @blp.arguments(IngestFormSchema, location="form")
    @blp.response(200, IngestResultSchema)
    @blp.alt_response(400, description="Invalid file or parameters; the message names the file or field")
    @blp.alt_response(413, description="A file over the size limit (10 MB by default)")
    @blp.alt_response(503, description="The embedding model is not available")
    @blp.alt_response(202, description="async=true: the ingest runs as an MCP job (poll /api/mcp/jobs/{job_id})")
    def post(self, form: dict[str, Any]):
        files = uploaded_files()
        sees = current_caller().sees
        existing = document_store.get_collection(form["collection"])
        if existing is not None and not existing.writable_by(sees):
            if existing.readable_by(sees):
                raise document_store.collection_read_only(form["collection"])
            raise document_store.collection_name_taken(form["collection"])
        if "rerank_model" in form:
            dispatcher().require_model(form["rerank_model"], RERANK, param="rerank_model")
        if existing is not None and "shared" in form:
            document_store.set_shared(existing.name, form["shared"])
        if existing is not None and "rerank_model" in form:
            document_store.set_rerank_model(existing.name, form["rerank_model"])
        model = form.get("embedding_model") or (existing.embedding_model if existing else None)
        model = model or dispatcher().pick_model("embed", "embedding_model")
        dispatcher().require_model(model, "embed", param="embedding_model")
        timeout = settings().rag_ingest_timeout_seconds
        redis = current_app.extensions["redis"]
        keep = settings().rag_staged_ttl_seconds if form["async_"] else timeout
        staged = [{"filename": name, "token": staging.stage(redis, data, keep)} for name, data in files]
        ingest = {
            "collection": form["collection"],
            "files": staged,
            "embedding_model": model,
            "chunk_size": form.get("chunk_size"),
            "overlap": form.get("overlap"),
            "metadata": form["metadata"],
            "owner": current_caller().owner,
            "sees": sees,
            "shared": form.get("shared", False),
            "rerank_model": form.get("rerank_model"),
        }
        if form["async_"]:
            return self._as_job(model, ingest, staged, form)
        try:
            result = rag_queue.run(dispatcher(), rag_queue.INGEST, [ingest], g.request_id, timeout)
        finally:
            staging.discard(redis, [item["token"] for item in staged])
        return {**result, "request_id": g.request_id}

    @staticmethod
    def _as_job(model: str, ingest: dict[str, Any], staged: list[dict[str, str]], form: dict[str, Any]):
        request = JobRequest(
            model_id=model,
            operation="rag_ingest",
            input=ingest,
            callback_url=form.get("callback_url"),
            metadata={"collection": form["collection"], "files": [item["filename"] for item in staged]},
            request_id=g.request_id,
            owner=current_caller().owner,
        )
        try:
            accepted = current_app.extensions["jobs"].submit(request)
        except Exception:
            staging.discard(current_app.extensions["redis"], [item["token"] for item in staged])
            raise
        response = jsonify({**accepted, "collection": form["collection"]})
        response.status_code = 202
        return response


@blp.route("/query")
class Query(MethodView):
    @blp.arguments(RagQuerySchema)
    @blp.response(200, RagAnswerSchema)
    @blp.alt_response(404, description="Unknown collection (collection_not_found) or model")
    @blp.alt_response(503, description="The chat or embedding model is not available")
    def post(self, body: dict[str, Any]):
        started = time.perf_counter()
        readable(body["collection"], "collection")
        model_id = body.get("model_id") or dispatcher().pick_model("chat", "model_id")
        dispatcher().require_model(model_id, "chat", param="model_id")
        query = rag_query_input(body, model_id)
        if not body["stream"]:
            answer = rag_queue.run(dispatcher(), rag_queue.ANSWER, [query], g.request_id)
            return {**answer, "request_id": g.request_id}
        retrieved = rag_queue.run(dispatcher(), rag_queue.RETRIEVE, [query["retrieval"]], g.request_id)
        payload = {**query["generation"], "stream": True, "messages": messages(body["query"], retrieved["sources"])}
        generating = time.perf_counter()
        call = dispatcher().start(model_id, "chat", payload, g.request_id, streaming=True)
        head = {
            "request_id": g.request_id,
            **({"sources": retrieved["sources"]} if body["include_sources"] else {}),
            "retrieval_latency_ms": retrieved["retrieval_latency_ms"],
            "metadata": query_metadata(query, retrieved["embedding_model"], retrieved.get("rerank_model")),
        }
        # Not ``opened``: the sources go out as soon as retrieval is done, before the answer's first token (an
        # error of the generation then comes as the stream's error event, not as the HTTP status).
        events = counted_events(dispatcher().events(call), current_caller().owner, current_app.extensions["redis"])
        return sse_response(_answer_events(events, head, started, generating), g.request_id)


def _answer_events(
    events: Iterator[dict[str, Any]], head: dict[str, Any], started: float, generating: float
) -> Iterator[dict[str, Any] | None]:
    """``rag.sources`` first, then a ``rag.delta`` per piece of the answer, then ``rag.done`` with the figures."""
    try:
        yield {"object": "rag.sources", **head}
        for event in events:
            if event["type"] == "idle":
                yield None
            elif event["type"] == "delta":
                yield {"object": "rag.delta", "delta": event["content"]}
            elif event["type"] == "done":
                choice = event["result"]["choices"][0]
                yield {
                    "object": "rag.done",
                    "answer": choice["content"],
                    "finish_reason": choice["finish_reason"],
                    "usage": event["result"]["usage"],
                    "retrieval_latency_ms": head["retrieval_latency_ms"],
                    "generation_latency_ms": _ms_since(generating),
                    "total_latency_ms": _ms_since(started),
                }
                return
    finally:
        events.close()


def _ms_since(moment: float) -> float:
    return round((time.perf_counter() - moment) * 1000, 1)


def readable(name: str, param: str) -> document_store.RagCollection:
    """The collection, if the caller may read it (its own, or shared); else 404."""
    collection = document_store.get_collection(name)
    if collection is None or not collection.readable_by(current_caller().sees):
        raise document_store.collection_not_found(name, param)
    return collection


def writable(name: str, param: str) -> document_store.RagCollection:
    """The collection, if the caller may change it (its own); 403 for one shared with it, else 404."""
    collection = readable(name, param)
    if not collection.writable_by(current_caller().sees):
        raise document_store.collection_read_only(name, param)
    return collection


def _summary(collection: document_store.RagCollection) -> dict[str, Any]:
    documents, chunks = document_store.counts(collection.name)
    return {
        "name": collection.name,
        "document_count": documents,
        "chunk_count": chunks,
        "created_at": document_store.iso(collection.created_at),
        "updated_at": document_store.iso(collection.updated_at),
        "metadata": dict(collection.metadata or {}),
        "shared": bool(collection.shared),
    }


@blp.route("/collections")
class Collections(MethodView):
    @blp.response(200, CollectionListSchema)
    def get(self):
        listed = document_store.collections(current_caller().sees)
        return {"collections": [_summary(c) for c in listed], "request_id": g.request_id}


@blp.route("/collections/<string:name>")
class Collection(MethodView):
    @blp.response(200, CollectionSchema)
    @blp.alt_response(404, description="collection_not_found")
    def get(self, name: str):
        collection = readable(name, "collection_name")
        return {
            **_summary(collection),
            "embedding_model": collection.embedding_model,
            "rerank_model": collection.rerank_model,
            "chunk_size": collection.chunk_size,
            "overlap": collection.overlap,
            "documents": [document.public() for document in document_store.ready_documents(name)],
            "request_id": g.request_id,
        }

    @blp.response(200, CollectionDeletedSchema)
    @blp.alt_response(404, description="collection_not_found")
    def delete(self, name: str):
        writable(name, "collection_name")
        result = rag_queue.run(dispatcher(), rag_queue.DROP_COLLECTION, [name], g.request_id)
        return {**result, "request_id": g.request_id}


@blp.route("/documents/<string:collection>/<string:document_id>")
class Document(MethodView):
    @blp.response(200, DocumentDeletedSchema)
    @blp.alt_response(404, description="collection_not_found or document_not_found")
    def delete(self, collection: str, document_id: str):
        writable(collection, "collection")
        result = rag_queue.run(dispatcher(), rag_queue.DELETE_DOCUMENT, [collection, document_id], g.request_id)
        return {**result, "request_id": g.request_id}
