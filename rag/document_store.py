"""Collections and documents of the RAG store, kept in MongoDB beside the vectors, and the moves that keep both
consistent.

A document is written ``ingesting`` (with a lease) before any of its chunks
reaches the vector store and turns ``ready`` only after all of them did;
deleting turns it ``deleting`` first and removes the record only after its
chunks are gone. So an ingest or delete that dies midway leaves a record whose
lease runs out, and the sweep (``RagService.sweep``) undoes the ingest or
finishes the delete: never chunks without a record, never a ready record
without its chunks. Searches return chunks of ``ready`` documents only.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import mongoengine as me

from config.clock import iso, now
from config.errors import ApiError
from config.leases import Lease, as_update
from config.ownership import visible

COLLECTION_STATUSES = ("ready", "deleting")
DOCUMENT_STATUSES = ("ingesting", "ready", "deleting")
LEASED = ("ingesting", "deleting")
"""The statuses of a document some process is working on, under a lease."""
LEASE = Lease("lease_until")
"""The lease of an ingest or a delete (a document's or a whole collection's): no holder token, the status says what
is going on and the process keeps the ids it works on."""


class RagCollection(me.Document):
    meta = {"collection": "rag_collections", "indexes": ["status", "owner"]}

    name = me.StringField(primary_key=True)
    embedding_model = me.StringField(required=True)
    dimension = me.IntField(required=True)
    chunk_size = me.IntField(required=True)
    overlap = me.IntField(required=True)
    metadata = me.DictField()
    status = me.StringField(choices=COLLECTION_STATUSES, default="ready")
    lease_until = me.DateTimeField()
    created_at = me.DateTimeField(required=True)
    updated_at = me.DateTimeField(required=True)
    owner = me.StringField()
    """The API key that created it (see ``config.ownership``): only it (or an admin) adds and deletes."""
    shared = me.BooleanField(default=False)
    """Readable (listed, shown, queried) by every key; still written only by its owner."""
    rerank_model = me.StringField()
    """The model that reranks a query with ``rerank: true`` that names none (a rerank or a chat model)."""

    def readable_by(self, sees: str | None) -> bool:
        return self.shared or visible(self.owner, sees)

    def writable_by(self, sees: str | None) -> bool:
        return visible(self.owner, sees)


class RagDocument(me.Document):
    meta = {
        "collection": "rag_documents",
        "indexes": [
            {"fields": ["collection", "content_hash"], "unique": True},
            ("collection", "status"),
            ("status", "lease_until"),
        ],
    }

    document_id = me.StringField(primary_key=True)
    collection = me.StringField(required=True)
    filename = me.StringField(required=True)
    content_hash = me.StringField(required=True)
    kind = me.StringField()
    pages = me.IntField()
    chunk_count = me.IntField(default=0)
    chunk_size = me.IntField()
    overlap = me.IntField()
    metadata = me.DictField()
    status = me.StringField(choices=DOCUMENT_STATUSES, required=True)
    lease_until = me.DateTimeField()
    ingested_at = me.DateTimeField()

    def public(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "filename": self.filename,
            "chunk_count": self.chunk_count,
            "ingested_at": iso(self.ingested_at),
            "metadata": dict(self.metadata or {}),
        }


def collection_not_found(name: str, param: str = "collection") -> ApiError:
    return ApiError(404, f"Collection '{name}' not found", code="collection_not_found", param=param)


def collection_name_taken(name: str, param: str = "collection") -> ApiError:
    """Another key's collection has this name (names are one namespace; its content stays hidden)."""
    return ApiError(
        409, f"The collection name '{name}' is taken: choose another", code="collection_name_taken", param=param
    )


def collection_read_only(name: str, param: str = "collection") -> ApiError:
    """A collection another key shares: it may be read, never written."""
    return ApiError(
        403,
        f"Collection '{name}' is shared read-only by its owner: only its owner adds or deletes",
        code="collection_read_only",
        param=param,
    )


def new_document_id() -> str:
    return f"doc-{uuid.uuid4().hex[:16]}"


def get_collection(name: str) -> RagCollection | None:
    return RagCollection.objects(name=name, status="ready").first()


def open_collection(
    name: str,
    embedding_model: str,
    dimension: int,
    chunk_size: int,
    overlap: int,
    metadata: dict[str, Any],
    owner: str | None = None,
    sees: str | None = None,
    shared: bool = False,
    rerank_model: str | None = None,
) -> RagCollection:
    """The ready collection ``name``, created with these settings (for ``owner``) when it does not exist.

    ``ValueError`` when it exists with another embedding model, or is being deleted; ``PermissionError`` when it
    is another owner's (``sees`` may not write it).
    """
    moment = now()
    RagCollection.objects(name=name).update_one(
        upsert=True,
        set_on_insert__embedding_model=embedding_model,
        set_on_insert__dimension=dimension,
        set_on_insert__chunk_size=chunk_size,
        set_on_insert__overlap=overlap,
        set_on_insert__metadata=metadata,
        set_on_insert__status="ready",
        set_on_insert__created_at=moment,
        set_on_insert__updated_at=moment,
        set_on_insert__owner=owner,
        set_on_insert__shared=shared,
        set_on_insert__rerank_model=rerank_model,
    )
    collection = RagCollection.objects(name=name).first()
    if collection is not None and not collection.writable_by(sees):
        raise PermissionError(name)
    if collection is None or collection.status != "ready":
        raise ValueError(f"collection {name!r} is being deleted; try again when it is gone")
    if collection.embedding_model != embedding_model or collection.dimension != dimension:
        raise ValueError(
            f"collection {name!r} holds embeddings of model '{collection.embedding_model}'"
            f" ({collection.dimension} dimensions); ingest into it with that model or use another collection"
        )
    return collection


def begin_document(
    collection: str, filename: str, content_hash: str, lease_seconds: float, **fields: Any
) -> RagDocument | None:
    """A new ``ingesting`` document, or None when the collection already has (or is ingesting) this content."""
    document = RagDocument(
        document_id=new_document_id(),
        collection=collection,
        filename=filename,
        content_hash=content_hash,
        status="ingesting",
        **LEASE.acquire(lease_seconds),
        **fields,
    )
    try:
        document.save(force_insert=True)
    except me.NotUniqueError:
        return None
    return document


def existing_document(collection: str, content_hash: str) -> RagDocument | None:
    return RagDocument.objects(collection=collection, content_hash=content_hash).first()


def renew(document_ids: list[str], lease_seconds: float) -> int:
    """Extends the leases of documents still being ingested or deleted by this process."""
    if not document_ids:
        return 0
    return LEASE.renew(RagDocument.objects(document_id__in=document_ids, status__in=LEASED), lease_seconds)


def finish_document(document_id: str, chunk_count: int) -> bool:
    """``ingesting`` -> ``ready``, only if the collection still exists; False otherwise (undo the ingest)."""
    document = RagDocument.objects(document_id=document_id).first()
    if document is None or get_collection(document.collection) is None:
        return False
    moment = now()
    done = RagDocument.objects(document_id=document_id, status="ingesting").update_one(
        **as_update({"status": "ready", "chunk_count": chunk_count, "ingested_at": moment, **LEASE.release()})
    )
    if done:
        RagCollection.objects(name=document.collection).update_one(set__updated_at=moment)
    return bool(done)


def start_delete(collection: str, document_id: str, lease_seconds: float) -> RagDocument | None:
    """``ready`` -> ``deleting`` (with a lease); None when no ready document of that id is in the collection."""
    claimed = RagDocument.objects(collection=collection, document_id=document_id, status="ready").update_one(
        **as_update({"status": "deleting", **LEASE.acquire(lease_seconds)})
    )
    return RagDocument.objects(document_id=document_id).first() if claimed else None


def remove_document(document_id: str) -> None:
    document = RagDocument.objects(document_id=document_id).first()
    if document is None:
        return
    document.delete()
    RagCollection.objects(name=document.collection).update_one(set__updated_at=now())


def forget_if_empty(name: str) -> bool:
    """Removes the collection's record when no document of it is left in any status (a first ingest that failed)."""
    if RagDocument.objects(collection=name).count():
        return False
    return bool(RagCollection.objects(name=name, status="ready").delete())


def start_drop(name: str, lease_seconds: float) -> RagCollection | None:
    """``ready`` -> ``deleting`` for the collection and all its documents; None when there is no such collection."""
    deleting = as_update({"status": "deleting", **LEASE.acquire(lease_seconds)})
    if not RagCollection.objects(name=name, status="ready").update_one(**deleting):
        return None
    RagDocument.objects(collection=name).update(**deleting)
    return RagCollection.objects(name=name).first()


def finish_drop(name: str) -> int:
    """Removes the collection's records; returns how many documents it had."""
    removed = RagDocument.objects(collection=name).delete()
    RagCollection.objects(name=name).delete()
    return removed


def ready_documents(collection: str) -> list[RagDocument]:
    return list(RagDocument.objects(collection=collection, status="ready").order_by("ingested_at"))


def ready_ids(document_ids: list[str]) -> set[str]:
    """Which of ``document_ids`` are ready (searchable)."""
    if not document_ids:
        return set()
    return {
        d.document_id for d in RagDocument.objects(document_id__in=document_ids, status="ready").only("document_id")
    }


def collections(sees: str | None = None) -> list[RagCollection]:
    """The ready collections ``sees`` may read: its own and the shared ones (every one for ``None``)."""
    query = RagCollection.objects(status="ready")
    if sees is not None:
        query = query.filter(me.Q(owner=sees) | me.Q(shared=True))
    return list(query.order_by("name"))


def set_rerank_model(name: str, model_id: str) -> None:
    RagCollection.objects(name=name).update_one(set__rerank_model=model_id, set__updated_at=now())


def set_shared(name: str, shared: bool) -> None:
    RagCollection.objects(name=name).update_one(set__shared=shared, set__updated_at=now())


def counts(collection: str) -> tuple[int, int]:
    """(ready documents, their chunks) of a collection."""
    documents = RagDocument.objects(collection=collection, status="ready").only("chunk_count")
    return documents.count(), sum(d.chunk_count or 0 for d in documents)


def totals() -> dict[str, int]:
    """Collections, ready documents and their chunks over the whole store."""
    documents = RagDocument.objects(status="ready").only("chunk_count")
    return {
        "collections": RagCollection.objects(status="ready").count(),
        "documents": documents.count(),
        "chunks": sum(d.chunk_count or 0 for d in documents),
    }


def expired_documents(moment: datetime | None = None) -> list[RagDocument]:
    """Ingests and deletes whose process stopped renewing their lease."""
    return LEASE.sweep(RagDocument.objects(status__in=LEASED), moment)


def expired_drops(moment: datetime | None = None) -> list[RagCollection]:
    """Collection drops whose process stopped renewing their lease."""
    return LEASE.sweep(RagCollection.objects(status="deleting"), moment)
