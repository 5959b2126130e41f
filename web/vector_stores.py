"""The OpenAI vector stores API (``/v1/vector_stores``) over RAG collections: a store is the collection of its id
(``tasks.vector_store_map``), a file attached is ingested by a ``rag_ingest`` job, and a search is retrieval only
(embed the query, search the collection: no generation)."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from flask import current_app, g
from flask.views import MethodView

from config.errors import ApiError
from config.settings import Settings
from tasks import file_store, rag_queue, staging
from tasks import vector_store_map as stores
from tasks.job_queue import JobQueue
from tasks.job_store import JobRequest
from web.api import Blueprint, dispatcher
from web.identity import current_caller
from web.schemas.vector_stores import (
    DeletedSchema,
    FileListQuerySchema,
    ListQuerySchema,
    SearchPageSchema,
    SearchSchema,
    VectorStoreCreateSchema,
    VectorStoreFileCreateSchema,
    VectorStoreFileListSchema,
    VectorStoreFileSchema,
    VectorStoreListSchema,
    VectorStoreSchema,
)

blp = Blueprint(
    "vector_stores", __name__, url_prefix="/v1", description="OpenAI vector stores: RAG collections, files, search"
)

POLL_AFTER_MS = "200"
"""The poll interval the OpenAI client's ``*_and_poll`` helpers take from ``openai-poll-after-ms`` (else 1 s)."""


def settings() -> Settings:
    return current_app.extensions["settings"]


def job_queue() -> JobQueue:
    return current_app.extensions["jobs"]


def listing(views: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's list page of ``views`` (newest first), in the asked order and from the asked cursor."""
    if query["order"] == "asc":
        views = views[::-1]
    data, more = stores.page(views, [v["id"] for v in views], query["after"], query["before"], query["limit"])
    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
    return {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": more}


def uploaded(file_id: str) -> file_store.StoredFile:
    """The caller's file ``file_id``, if it was uploaded for a vector store; else 404 or 400."""
    stored = file_store.get(file_id, current_caller().sees)
    if stored is None:
        raise ApiError(404, f"File '{file_id}' not found", code="file_not_found", param="file_id")
    if stored.purpose not in stores.FILE_PURPOSES:
        raise ApiError(
            400,
            f"File '{file_id}' was uploaded for {stored.purpose}; vector stores take files uploaded for"
            f" {' or '.join(stores.FILE_PURPOSES)}",
            code="invalid_file",
            param="file_id",
        )
    return stored


def create(body: dict[str, Any]) -> stores.Store:
    """A new store, with its ``file_ids`` attached (each checked before anything is written)."""
    files = [uploaded(file_id) for file_id in body.get("file_ids") or []]
    record = stores.create(body.get("name"), body.get("metadata") or {}, current_caller().owner)
    for stored in files:
        attach(record.vector_store_id, stored, body)
    return stores.find(record.vector_store_id, current_caller().sees)


def attach(vector_store_id: str, stored: file_store.StoredFile, body: dict[str, Any]) -> stores.VectorStoreFile:
    """Attaches an uploaded file: records it, stages its bytes and submits the job that ingests it. A file already
    attached (being ingested, or ingested) stays as it is; one whose ingest failed or was cancelled is tried again."""
    caller = current_caller()
    store = stores.writable(vector_store_id, caller.sees)
    existing = stores.attachment(vector_store_id, stored.file_id)
    if existing is not None and stores.FileState(existing).status in ("in_progress", "completed"):
        return existing
    model = store.collection.embedding_model if store.collection else dispatcher().pick_model("embed", "file_id")
    dispatcher().require_model(model, "embed", param="file_id")
    chunk_size, overlap = stores.chunking(body.get("chunking_strategy"))
    attributes = body.get("attributes") or {}
    attached = stores.attach(
        vector_store_id,
        stored.file_id,
        stored.filename,
        stored.size or 0,
        attributes,
        body.get("chunking_strategy") or {},
    )
    redis = current_app.extensions["redis"]
    token = staging.stage(
        redis, file_store.read(settings().data_dir, stored.file_id), settings().rag_staged_ttl_seconds
    )
    ingest = {
        "collection": vector_store_id,
        "files": [{"filename": stored.filename, "token": token}],
        "embedding_model": model,
        "chunk_size": chunk_size,
        "overlap": overlap,
        "metadata": {**attributes, stores.FILE_ID_KEY: stored.file_id},
        "owner": caller.owner,
        "sees": caller.sees,
    }
    request = JobRequest(
        model_id=model,
        operation="rag_ingest",
        input=ingest,
        metadata={"vector_store_id": vector_store_id, "file_id": stored.file_id},
        request_id=g.request_id,
        owner=caller.owner,
    )
    try:
        accepted = job_queue().submit(request)
    except Exception:
        staging.discard(redis, [token])
        stores.forget(attached)
        raise
    stores.set_job(attached, accepted["job_id"])
    return attached


def stop(state: stores.FileState) -> None:
    """Cancels an ingest still running (one that has just finished is left as it is)."""
    if state.status == "in_progress" and state.job_id:
        with suppress(ApiError):
            job_queue().cancel(state.job_id)


def remove_document(vector_store_id: str, document_id: str) -> None:
    with suppress(ApiError):  # already gone
        rag_queue.run(dispatcher(), rag_queue.DELETE_DOCUMENT, [vector_store_id, document_id], g.request_id)


def delete_store(vector_store_id: str) -> None:
    """Cancels the store's running ingests, drops its collection (chunks and documents), forgets its files."""
    store = stores.writable(vector_store_id, current_caller().sees)
    for attached in stores.attachments(vector_store_id):
        stop(stores.FileState(attached))
    if store.collection is not None:
        with suppress(ApiError):  # dropped meanwhile
            rag_queue.run(dispatcher(), rag_queue.DROP_COLLECTION, [vector_store_id], g.request_id)
    stores.forget_store(vector_store_id)


def file_of(vector_store_id: str, file_id: str) -> dict[str, Any]:
    stores.find(vector_store_id, current_caller().sees)
    view = next((v for v in stores.file_views(vector_store_id) if v["id"] == file_id), None)
    if view is None:
        raise stores.file_not_found(vector_store_id, file_id)
    return view


def detach(vector_store_id: str, file_id: str) -> None:
    """Removes a file's chunks from the store (its ingest cancelled if still running); the file itself stays."""
    stores.writable(vector_store_id, current_caller().sees)
    attached = stores.attachment(vector_store_id, file_id)
    if attached is None:
        file_of(vector_store_id, file_id)  # a document ingested through /api/rag, or a 404
        remove_document(vector_store_id, file_id)
        return
    state = stores.FileState(attached)
    stop(state)
    for document_id in state.document_ids:
        remove_document(vector_store_id, document_id)
    stores.forget(attached)


def search(vector_store_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Retrieval only: the query embedded, the store's collection searched; no generation."""
    store = stores.find(vector_store_id, current_caller().sees)
    texts = [body["query"]] if isinstance(body["query"], str) else body["query"]
    page = {"object": "vector_store.search_results.page", "search_query": texts, "has_more": False, "next_page": None}
    filters = stores.equality_filters(body.get("filters"))
    if store.collection is None:  # no file ingested yet
        return {**page, "data": []}
    ranking = body.get("ranking_options") or {}
    query = {
        "collection": vector_store_id,
        "query": "\n".join(texts),
        "top_k": body["max_num_results"],
        "similarity_threshold": ranking.get("score_threshold"),
        "filters": filters,
        "mode": "hybrid" if "hybrid_search" in ranking else "vector",
        "sees": current_caller().sees,
    }
    retrieved = rag_queue.run(dispatcher(), rag_queue.RETRIEVE, [query], g.request_id)
    return {**page, "data": [stores.search_result(source) for source in retrieved["sources"]]}


@blp.route("/vector_stores")
class VectorStores(MethodView):
    @blp.arguments(VectorStoreCreateSchema)
    @blp.alt_response(200, schema=VectorStoreSchema, description="The new vector store (its files being ingested)")
    @blp.alt_response(400, description="A file uploaded for another purpose than assistants or user_data")
    @blp.alt_response(404, description="A file of file_ids not found")
    @blp.alt_response(429, description="The embedding model's job queue is full")
    @blp.alt_response(503, description="No embedding model is served")
    def post(self, body: dict[str, Any]):
        return stores.store_view(create(body))

    @blp.arguments(ListQuerySchema, location="query")
    @blp.alt_response(200, schema=VectorStoreListSchema, description="A page of the stores the caller may read")
    def get(self, query: dict[str, Any]):
        return listing([stores.store_view(store) for store in stores.stores(current_caller().sees)], query)


@blp.route("/vector_stores/<string:vector_store_id>")
class OneVectorStore(MethodView):
    @blp.alt_response(200, schema=VectorStoreSchema, description="The vector store")
    @blp.alt_response(404, description="No such vector store")
    def get(self, vector_store_id: str):
        return stores.store_view(stores.find(vector_store_id, current_caller().sees))

    @blp.alt_response(200, schema=DeletedSchema, description="The store, its files' chunks and its collection deleted")
    @blp.alt_response(403, description="A collection another key shares read-only")
    @blp.alt_response(404, description="No such vector store")
    def delete(self, vector_store_id: str):
        delete_store(vector_store_id)
        return {"id": vector_store_id, "object": "vector_store.deleted", "deleted": True}


@blp.route("/vector_stores/<string:vector_store_id>/files")
class VectorStoreFiles(MethodView):
    @blp.arguments(VectorStoreFileCreateSchema)
    @blp.alt_response(200, schema=VectorStoreFileSchema, description="The file, in_progress: its ingest job runs")
    @blp.alt_response(400, description="A file uploaded for another purpose than assistants or user_data")
    @blp.alt_response(403, description="A collection another key shares read-only")
    @blp.alt_response(404, description="No such vector store or file")
    @blp.alt_response(429, description="The embedding model's job queue is full")
    @blp.alt_response(503, description="No embedding model is served")
    def post(self, body: dict[str, Any], vector_store_id: str):
        attached = attach(vector_store_id, uploaded(body["file_id"]), body)
        return stores.file_view(attached), {"openai-poll-after-ms": POLL_AFTER_MS}

    @blp.arguments(FileListQuerySchema, location="query")
    @blp.alt_response(200, schema=VectorStoreFileListSchema, description="A page of the store's files")
    @blp.alt_response(404, description="No such vector store")
    def get(self, query: dict[str, Any], vector_store_id: str):
        stores.find(vector_store_id, current_caller().sees)
        views = stores.file_views(vector_store_id)
        if query.get("filter"):
            views = [view for view in views if view["status"] == query["filter"]]
        return listing(views, query)


@blp.route("/vector_stores/<string:vector_store_id>/files/<string:file_id>")
class OneVectorStoreFile(MethodView):
    @blp.alt_response(200, schema=VectorStoreFileSchema, description="The file and its ingest's status")
    @blp.alt_response(404, description="No such vector store, or the file is not in it")
    def get(self, vector_store_id: str, file_id: str):
        return file_of(vector_store_id, file_id), {"openai-poll-after-ms": POLL_AFTER_MS}

    @blp.alt_response(200, schema=DeletedSchema, description="The file's chunks are deleted (the file itself stays)")
    @blp.alt_response(403, description="A collection another key shares read-only")
    @blp.alt_response(404, description="No such vector store, or the file is not in it")
    def delete(self, vector_store_id: str, file_id: str):
        detach(vector_store_id, file_id)
        return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


@blp.route("/vector_stores/<string:vector_store_id>/search")
class VectorStoreSearch(MethodView):
    @blp.arguments(SearchSchema)
    @blp.alt_response(200, schema=SearchPageSchema, description="The best chunks, best first (retrieval only)")
    @blp.alt_response(400, description="A filter other than eq comparisons joined by and")
    @blp.alt_response(404, description="No such vector store")
    @blp.alt_response(503, description="The store's embedding model is not served")
    def post(self, body: dict[str, Any], vector_store_id: str):
        return search(vector_store_id, body)
