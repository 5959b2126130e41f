"""OpenAI vector stores over RAG collections: a vector store is the collection of the same name, and each file
attached to it is one ``rag_ingest`` job whose document carries the file's id (``file_id`` in its metadata).

MongoDB holds what the collection does not: a store's display name, metadata and owner (a store may be empty,
while a collection exists from its first chunk on), and each attachment with the job ingesting it; an
attachment's status is its job's. A collection made by ``/api/rag/ingest`` is a vector store too, its documents
its files.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import mongoengine as me

from config.clock import now
from config.errors import ApiError
from config.ownership import owned_by
from rag import document_store
from tasks import job_store

FILE_PURPOSES = ("assistants", "user_data")
"""The purposes of a file that may be attached to a vector store."""
FILE_ID_KEY = "file_id"
"""The document metadata key naming the file a document was ingested from."""
INTERNAL_KEYS = ("file", "page", "document_id", FILE_ID_KEY)
"""Chunk metadata the platform adds; the rest are the file's ``attributes``."""
JOB_STATUS = {
    "queued": "in_progress",
    "processing": "in_progress",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}
USER_ERRORS = {"invalid_file": "invalid_file", "invalid_value": "invalid_file"}
"""Ingest error codes that are the file's fault (OpenAI's ``last_error.code``); any other is ``server_error``."""


class VectorStoreRecord(me.Document):
    meta = {"collection": "vector_stores", "indexes": [("owner", "created_at"), "created_at"]}

    vector_store_id = me.StringField(primary_key=True)
    """Also the name of its collection."""
    name = me.StringField()
    metadata = me.DictField()
    owner = me.StringField()
    created_at = me.DateTimeField(required=True)


class VectorStoreFile(me.Document):
    meta = {"collection": "vector_store_files", "indexes": [("vector_store_id", "created_at")]}

    attachment_id = me.StringField(primary_key=True)
    vector_store_id = me.StringField(required=True)
    file_id = me.StringField(required=True)
    filename = me.StringField()
    job_id = me.StringField()
    attributes = me.DictField()
    chunking_strategy = me.DictField()
    usage_bytes = me.IntField(default=0)
    created_at = me.DateTimeField(required=True)


def new_vector_store_id() -> str:
    return f"vs_{uuid.uuid4().hex[:24]}"


def attachment_id(vector_store_id: str, file_id: str) -> str:
    return f"{vector_store_id}|{file_id}"


def not_found(vector_store_id: str) -> ApiError:
    return ApiError(
        404, f"Vector store '{vector_store_id}' not found", code="vector_store_not_found", param="vector_store_id"
    )


def file_not_found(vector_store_id: str, file_id: str) -> ApiError:
    return ApiError(
        404, f"File '{file_id}' is not in vector store '{vector_store_id}'", code="file_not_found", param="file_id"
    )


def create(name: str | None, metadata: dict[str, Any], owner: str | None) -> VectorStoreRecord:
    record = VectorStoreRecord(
        vector_store_id=new_vector_store_id(), name=name, metadata=metadata, owner=owner, created_at=now()
    )
    record.save(force_insert=True)
    return record


class Store:
    """One vector store as a caller sees it: its record and its collection (either may be missing, not both)."""

    def __init__(self, vector_store_id: str, record: VectorStoreRecord | None, collection: Any) -> None:
        self.vector_store_id = vector_store_id
        self.record = record
        self.collection: document_store.RagCollection | None = collection

    @property
    def created_at(self) -> datetime:
        return self.record.created_at if self.record is not None else self.collection.created_at

    def writable_by(self, sees: str | None) -> bool:
        if self.collection is not None:
            return self.collection.writable_by(sees)
        return sees is None or self.record.owner == sees


def find(vector_store_id: str, sees: str | None) -> Store:
    """The store, if ``sees`` may read it (its own, or a collection shared with it); else 404."""
    record = VectorStoreRecord.objects(vector_store_id=vector_store_id, **owned_by(sees)).first()
    collection = document_store.get_collection(vector_store_id)
    if collection is not None and not collection.readable_by(sees):
        collection = None
    if record is None and collection is None:
        raise not_found(vector_store_id)
    return Store(vector_store_id, record, collection)


def writable(vector_store_id: str, sees: str | None) -> Store:
    """The store, if ``sees`` may change it; 403 for a collection shared read-only with it, else 404."""
    store = find(vector_store_id, sees)
    if not store.writable_by(sees):
        raise document_store.collection_read_only(vector_store_id, "vector_store_id")
    return store


def stores(sees: str | None) -> list[Store]:
    """Every store ``sees`` may read, newest first: the records, and the collections that have none."""
    records = {r.vector_store_id: r for r in VectorStoreRecord.objects(**owned_by(sees))}
    collections = {c.name: c for c in document_store.collections(sees)}
    found = [Store(name, records.get(name), collections.get(name)) for name in {*records, *collections}]
    return sorted(found, key=lambda store: (store.created_at, store.vector_store_id), reverse=True)


def page(items: list[Any], ids: list[str], after: str | None, before: str | None, limit: int) -> tuple[list, bool]:
    """A page of ``items`` (already in the asked order, ``ids`` theirs) after or before the cursor's item."""
    if after in ids:
        items = items[ids.index(after) + 1 :]
    elif before in ids:
        items = items[: ids.index(before)][-limit:]
    return items[:limit], len(items) > limit


# --- files ----------------------------------------------------------------------------------------------


def attach(
    vector_store_id: str,
    file_id: str,
    filename: str,
    size: int,
    attributes: dict[str, Any],
    chunking_strategy: dict[str, Any],
) -> VectorStoreFile:
    """Records the attachment before its job exists; ``set_job`` names the job once submitted. Attaching a file
    again replaces its attachment (the same content is not ingested twice: the collection keeps one document)."""
    attachment = VectorStoreFile(
        attachment_id=attachment_id(vector_store_id, file_id),
        vector_store_id=vector_store_id,
        file_id=file_id,
        filename=filename,
        attributes=attributes,
        chunking_strategy=chunking_strategy,
        usage_bytes=size,
        created_at=now(),
    )
    attachment.save()
    return attachment


def set_job(attachment: VectorStoreFile, job_id: str) -> None:
    VectorStoreFile.objects(attachment_id=attachment.attachment_id).update_one(set__job_id=job_id)
    attachment.job_id = job_id


def forget(attachment: VectorStoreFile) -> None:
    attachment.delete()


def attachments(vector_store_id: str) -> list[VectorStoreFile]:
    return list(VectorStoreFile.objects(vector_store_id=vector_store_id).order_by("-created_at", "-attachment_id"))


def attachment(vector_store_id: str, file_id: str) -> VectorStoreFile | None:
    return VectorStoreFile.objects(attachment_id=attachment_id(vector_store_id, file_id)).first()


def forget_store(vector_store_id: str) -> None:
    VectorStoreFile.objects(vector_store_id=vector_store_id).delete()
    VectorStoreRecord.objects(vector_store_id=vector_store_id).delete()


def chunking(strategy: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(chunk_size, overlap) of an OpenAI chunking strategy; ``auto`` (or none) leaves both to the platform."""
    if not strategy or strategy.get("type") != "static":
        return None, None
    static = strategy.get("static") or {}
    return static.get("max_chunk_size_tokens"), static.get("chunk_overlap_tokens")


def strategy_view(strategy: dict[str, Any] | None) -> dict[str, Any]:
    if strategy and strategy.get("type") == "static":
        return strategy
    return {"type": "other"}


class FileState:
    """An attachment's status from its job: ``in_progress``, ``completed``, ``failed`` or ``cancelled``, the
    documents its ingest added (none for content the collection already had) and the error."""

    def __init__(self, attachment: VectorStoreFile) -> None:
        job = job_store.get(attachment.job_id) if attachment.job_id else None
        self.job_id = attachment.job_id
        self.status = JOB_STATUS[job.status] if job is not None else "failed"
        self.last_error: dict[str, str] | None = None
        result = (job.result or {}) if job is not None else {}
        duplicates = set(result.get("duplicates") or [])
        self.document_ids = [d for d in result.get("document_ids") or [] if d not in duplicates]
        if job is None:
            self.last_error = {"code": "server_error", "message": "the file's ingest job is gone"}
        elif job.status == "failed":
            self.last_error = {"code": USER_ERRORS.get(job.error_code or "", "server_error"), "message": job.error}


def file_view(attachment: VectorStoreFile) -> dict[str, Any]:
    state = FileState(attachment)
    return {
        "id": attachment.file_id,
        "object": "vector_store.file",
        "created_at": int(attachment.created_at.timestamp()),
        "vector_store_id": attachment.vector_store_id,
        "status": state.status,
        "last_error": state.last_error,
        "usage_bytes": attachment.usage_bytes or 0,
        "attributes": dict(attachment.attributes or {}),
        "chunking_strategy": strategy_view(attachment.chunking_strategy),
    }


def document_view(vector_store_id: str, document: document_store.RagDocument) -> dict[str, Any]:
    """A document ingested through ``/api/rag/ingest`` as a file of its store (its id is the document's)."""
    return {
        "id": document.document_id,
        "object": "vector_store.file",
        "created_at": int(document.ingested_at.timestamp()) if document.ingested_at else 0,
        "vector_store_id": vector_store_id,
        "status": "completed",
        "last_error": None,
        "usage_bytes": 0,
        "attributes": {k: v for k, v in (document.metadata or {}).items() if k not in INTERNAL_KEYS},
        "chunking_strategy": {
            "type": "static",
            "static": {"max_chunk_size_tokens": document.chunk_size, "chunk_overlap_tokens": document.overlap},
        },
    }


def file_views(vector_store_id: str) -> list[dict[str, Any]]:
    """The store's attachments, newest first, then the documents of its collection no attachment made."""
    views = [file_view(attached) for attached in attachments(vector_store_id)]
    documents = document_store.ready_documents(vector_store_id)
    views += [
        document_view(vector_store_id, document)
        for document in reversed(documents)
        if FILE_ID_KEY not in (document.metadata or {})
    ]
    return views


def store_view(store: Store) -> dict[str, Any]:
    files = file_views(store.vector_store_id)
    counts = {status: sum(1 for f in files if f["status"] == status) for status in set(JOB_STATUS.values())}
    record = store.record
    updated = store.collection.updated_at if store.collection is not None else store.created_at
    return {
        "id": store.vector_store_id,
        "object": "vector_store",
        "created_at": int(store.created_at.timestamp()),
        "name": (record.name if record is not None else None) or store.vector_store_id,
        "usage_bytes": sum(f["usage_bytes"] for f in files),
        "file_counts": {**counts, "total": len(files)},
        "status": "in_progress" if counts["in_progress"] else "completed",
        "last_active_at": int(updated.timestamp()),
        "metadata": dict(record.metadata or {}) if record is not None else dict(store.collection.metadata or {}),
        "expires_after": None,
        "expires_at": None,
    }


# --- search ---------------------------------------------------------------------------------------------


def equality_filters(openai_filter: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's attribute filter as the vector stores' equality filters: an ``eq`` comparison, or an ``and`` of
    them; any other is a 400 naming ``filters``."""
    if not openai_filter:
        return None
    kind = openai_filter.get("type")
    key, value = openai_filter.get("key"), openai_filter.get("value")
    if kind == "eq" and isinstance(key, str) and key and isinstance(value, str | int | float | bool):
        return {key: value}
    if kind == "and":
        merged: dict[str, Any] = {}
        for part in openai_filter.get("filters") or []:
            merged.update(equality_filters(part if isinstance(part, dict) else {"type": part}) or {})
        return merged
    raise ApiError(
        400,
        f"Filter {openai_filter!r} is not supported: use 'eq' comparisons of an attribute (key) with a string,"
        " number or boolean (value), alone or combined with 'and'",
        code="unsupported_filter",
        param="filters",
    )


def search_result(source: dict[str, Any]) -> dict[str, Any]:
    """One retrieved chunk (``tasks.rag_service.source``) as OpenAI's search result."""
    metadata = source["metadata"]
    return {
        "file_id": metadata.get(FILE_ID_KEY) or metadata.get("document_id"),
        "filename": metadata.get("file"),
        "score": source["score"],
        "attributes": {k: v for k, v in metadata.items() if k not in INTERNAL_KEYS},
        "content": [{"type": "text", "text": source["text"]}],
    }
