"""RAG work as the control worker runs it: ingest, retrieve, delete and the sweep of work that died midway.

The vector store lives where the ``rag`` queue is consumed; embeddings are
computed on the embedding model's own queue (``Dispatcher``), in batches.
MongoDB holds the collection and document records (``rag.document_store``), whose
statuses and leases keep records and vectors consistent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from config.errors import ApiError
from config.model_types import RERANK
from config.settings import Settings
from models import hub, registry
from models.handlers.base import RequestCancelled
from rag import document_store
from rag.answer import messages, query_metadata
from rag.chunking import DEFAULT_CHUNK_SIZE, DEFAULT_OVERLAP, validate_chunking
from rag.extract import ExtractionError
from rag.ingest import Prepared, chunk_records, max_chunk_tokens, prepare
from rag.retrieval import Rerank, retrieve
from rag.store import make_store
from rag.vectors import CollectionNotFound, Hit, VectorStore
from tasks.dispatch import Dispatcher

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any]], None]
"""Progress events of a running ingest (``{"type": "progress", ...}``)."""
Cancelled = Callable[[], bool]


def never() -> bool:
    return False


@dataclass
class IngestRequest:
    collection: str
    files: list[tuple[str, bytes]]
    embedding_model: str
    chunk_size: int | None = None
    overlap: int | None = None
    metadata: dict[str, Any] | None = None
    owner: str | None = None
    """The key the ingest is for; ``sees``: what that key may write (see ``config.ownership``)."""
    sees: str | None = None
    shared: bool = False
    rerank_model: str | None = None


@dataclass
class RagService:
    settings: Settings
    dispatcher: Dispatcher

    @cached_property
    def store(self) -> VectorStore:
        return make_store(self.settings)

    # -- ingest ---------------------------------------------------------------------------------------------

    def ingest(
        self,
        request: IngestRequest,
        request_id: str,
        report: Report,
        working: list[str],
        cancelled: Cancelled = never,
    ) -> dict[str, Any]:
        """Ingests every file or none: its documents stay ``ingesting`` until all are stored, then turn ready
        together; on any failure the documents this request added are removed again.

        ``working`` receives the ids of documents being written, whose leases the caller keeps renewing. Each
        file's embedding calls carry the request id ``<request_id>.file<n>``.
        """
        started = time.perf_counter()
        model = registry.get_record(request.embedding_model)
        if model is None:
            raise ApiError(404, f"Model '{request.embedding_model}' not found", code="model_not_found")
        tokenizer = str(hub.tokenizer_folder(model.path))
        chunk_size, overlap = self._chunking(request, tokenizer, model.context_length)
        prepared = [self._prepare(name, data, tokenizer, chunk_size, overlap) for name, data in request.files]
        existed = document_store.get_collection(request.collection) is not None
        added: list[str] = []
        results: list[dict[str, Any]] = []
        embedding_ms = 0.0
        try:
            for number, item in enumerate(prepared, start=1):
                duplicate = document_store.existing_document(request.collection, item.document.content_hash)
                if duplicate is not None and duplicate.status == "ready":
                    results.append({"document_id": duplicate.document_id, "chunks": 0, "duplicate": True})
                    continue
                embed_started = time.perf_counter()
                vectors = self._embed(
                    request.embedding_model, item, request_id, report, (number, len(prepared)), cancelled
                )
                embedding_ms += (time.perf_counter() - embed_started) * 1000
                results.append(self._store(request, item, vectors, chunk_size, overlap, working, added))
            if cancelled():
                raise RequestCancelled("the ingest was cancelled")
            if any(not result.get("duplicate") for result in results):
                self.store.settle(request.collection)
            for result in results:
                if not result.get("duplicate") and not document_store.finish_document(
                    result["document_id"], result["chunks"]
                ):
                    raise ApiError(
                        409,
                        f"Collection '{request.collection}' was deleted during this ingest",
                        code="collection_deleted",
                        param="collection",
                    )
        except BaseException:
            self._undo(request.collection, added, drop_empty=not existed)
            raise
        finally:
            working.clear()
        new = [r for r in results if not r.get("duplicate")]
        return {
            "collection": request.collection,
            "documents_ingested": len(new),
            "chunks_created": sum(r["chunks"] for r in new),
            "embedding_time_ms": round(embedding_ms),
            "document_ids": [r["document_id"] for r in results],
            "duplicates": [r["document_id"] for r in results if r.get("duplicate")],
            "chunk_size": chunk_size,
            "overlap": overlap,
            "embedding_model": request.embedding_model,
            "total_time_ms": round((time.perf_counter() - started) * 1000),
            "status": "completed",
        }

    def _chunking(self, request: IngestRequest, model_dir: str, context_length: int | None) -> tuple[int, int]:
        limit = max_chunk_tokens(model_dir, context_length)
        chunk_size = request.chunk_size if request.chunk_size is not None else min(DEFAULT_CHUNK_SIZE, limit)
        if chunk_size > limit:
            raise ApiError(
                400,
                f"chunk_size {chunk_size} is over the {limit} tokens embedding model '{request.embedding_model}'"
                " reads: longer chunks would be cut before they are embedded",
                code="invalid_value",
                param="chunk_size",
            )
        overlap = request.overlap if request.overlap is not None else min(DEFAULT_OVERLAP, chunk_size // 4)
        try:
            validate_chunking(chunk_size, overlap)
        except ValueError as exc:
            param = "overlap" if str(exc).startswith("overlap") else "chunk_size"
            raise ApiError(400, str(exc), code="invalid_value", param=param) from None
        return chunk_size, overlap

    @staticmethod
    def _prepare(filename: str, data: bytes, model_dir: str, chunk_size: int, overlap: int) -> Prepared:
        try:
            prepared = prepare(filename, data, model_dir, chunk_size, overlap)
        except ExtractionError as exc:
            raise ApiError(
                400, f"File '{exc.filename}' cannot be ingested: {exc.reason}", code="invalid_file", param="files"
            ) from None
        if not prepared.chunks:
            raise ApiError(400, f"File '{filename}' has no text to ingest", code="invalid_file", param="files")
        return prepared

    def _embed(
        self,
        model: str,
        item: Prepared,
        request_id: str,
        report: Report,
        position: tuple[int, int],
        cancelled: Cancelled,
    ) -> list[list[float]]:
        """The chunks' vectors, ``rag_embed_batch`` at a time; stops between batches once ``cancelled`` says so."""
        number, files = position
        texts = [chunk.text for chunk in item.chunks]
        batch = self.settings.rag_embed_batch
        vectors: list[list[float]] = []
        for start in range(0, len(texts), batch):
            if cancelled():
                raise RequestCancelled("the ingest was cancelled")
            call = self.dispatcher.start(
                model, "embed", {"input": texts[start : start + batch]}, f"{request_id}.file{number}"
            )
            vectors.extend(self.dispatcher.result(call)["embeddings"])
            report(
                {
                    "type": "progress",
                    "file": item.document.filename,
                    "file_number": number,
                    "files": files,
                    "chunks_embedded": len(vectors),
                    "chunks": len(texts),
                }
            )
        return vectors

    def _store(
        self,
        request: IngestRequest,
        item: Prepared,
        vectors: list[list[float]],
        chunk_size: int,
        overlap: int,
        working: list[str],
        added: list[str],
    ) -> dict[str, Any]:
        metadata = dict(request.metadata or {})
        dimension = len(vectors[0])
        try:
            document_store.open_collection(
                request.collection,
                request.embedding_model,
                dimension,
                chunk_size,
                overlap,
                metadata,
                request.owner,
                request.sees,
                request.shared,
                request.rerank_model,
            )
        except ValueError as exc:
            raise ApiError(400, str(exc), code="invalid_value", param="collection") from None
        except PermissionError:
            raise document_store.collection_name_taken(request.collection) from None
        document = document_store.begin_document(
            request.collection,
            item.document.filename,
            item.document.content_hash,
            self.settings.rag_lease_seconds,
            kind=item.document.kind,
            pages=sum(1 for part in item.document.parts if part.page is not None) or None,
            chunk_size=chunk_size,
            overlap=overlap,
            metadata=metadata,
        )
        if document is None:
            existing = document_store.existing_document(request.collection, item.document.content_hash)
            return {"document_id": existing.document_id if existing else None, "chunks": 0, "duplicate": True}
        working.append(document.document_id)
        added.append(document.document_id)
        self.store.ensure_collection(request.collection, dimension)
        self.store.upsert(request.collection, chunk_records(document.document_id, item, vectors, metadata))
        return {"document_id": document.document_id, "chunks": len(item.chunks)}

    def _undo(self, collection: str, document_ids: list[str], drop_empty: bool) -> None:
        for document_id in document_ids:
            try:
                self._remove_chunks(collection, document_id)
                document_store.remove_document(document_id)
            except Exception:  # noqa: BLE001 - left ingesting, its lease runs out and the sweep removes it
                log.exception("could not undo document %s of a failed ingest", document_id)
        if drop_empty:
            document_store.forget_if_empty(collection)

    def _remove_chunks(self, collection: str, document_id: str) -> int:
        try:
            return self.store.delete_document(collection, document_id)
        except CollectionNotFound:
            return 0

    # -- retrieval ------------------------------------------------------------------------------------------

    @staticmethod
    def readable_collection(name: str, sees: str | None) -> document_store.RagCollection:
        """The collection, if a caller that ``sees`` may read it (see ``config.ownership``); else 404."""
        collection = document_store.get_collection(name)
        if collection is None or not collection.readable_by(sees):
            raise document_store.collection_not_found(name)
        return collection

    def retrieve(self, query: dict[str, Any], request_id: str) -> dict[str, Any]:
        started = time.perf_counter()
        name = query["collection"]
        collection = self.readable_collection(name, query.get("sees"))
        model = query.get("embedding_model") or collection.embedding_model
        if model != collection.embedding_model:
            raise ApiError(
                400,
                f"Collection '{name}' was embedded with '{collection.embedding_model}'; querying it with '{model}'"
                " would compare vectors of different models",
                code="invalid_value",
                param="embedding_model",
            )
        reranker = self.reranker(query, collection) if query.get("rerank") else None
        call = self.dispatcher.start(model, "embed", {"input": [query["query"]]}, request_id)
        vector = self.dispatcher.result(call)["embeddings"][0]
        rerank = self.rerank_with(reranker, request_id) if reranker else None
        sources = self.search(name, query["query"], vector, query, rerank)
        return {
            "sources": sources,
            "embedding_model": model,
            "rerank_model": reranker,
            "retrieval_latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    def reranker(self, query: dict[str, Any], collection: document_store.RagCollection) -> str:
        """The query's ``rerank_model``, else the collection's, else the first loaded ``rerank`` model; a 400
        naming what to load when there is none (a 404 or 400 for a named model that is unknown or cannot)."""
        named = query.get("rerank_model")
        if named or collection.rerank_model:
            model_id = named or collection.rerank_model
            self.dispatcher.require_model(model_id, RERANK, param="rerank_model" if named else "collection")
            return model_id
        try:
            return self.dispatcher.pick_model(RERANK, "rerank", model_type="rerank")
        except ApiError:
            raise ApiError(
                400,
                "rerank: true needs a reranker, and no rerank model is loaded: load one (POST /v1/models/load with "
                "model_type 'rerank' and a cross-encoder such as bge-reranker or ms-marco MiniLM), or name a chat "
                "model in rerank_model (or as the collection's rerank_model at ingest)",
                code="model_unavailable",
                param="rerank",
            ) from None

    def rerank_with(self, model_id: str, request_id: str) -> Rerank:
        """``model_id``'s relevance scores of passages for a query, on its own queue."""

        def rerank(query: str, passages: list[str]) -> list[float]:
            call = self.dispatcher.start(model_id, RERANK, {"pairs": [[query, p] for p in passages]}, request_id)
            return self.dispatcher.result(call)["scores"]

        return rerank

    def search(
        self, name: str, text: str, vector: list[float], options: dict[str, Any], rerank: Rerank | None = None
    ) -> list[dict[str, Any]]:
        """The sources of collection ``name`` nearest ``vector`` (and ``text``, in hybrid mode), ready ones only;
        ``options``: ``top_k``, ``similarity_threshold``, ``filters``, ``mode``, ``rerank_candidates`` (with
        ``rerank``, which reorders them)."""
        try:
            ranked = retrieve(
                self.store,
                name,
                text,
                vector,
                top_k=options["top_k"],
                threshold=options.get("similarity_threshold"),
                filters=options.get("filters"),
                mode=options.get("mode", "vector"),
                rerank=rerank,
                rerank_candidates=options.get("rerank_candidates"),
                keep=_ready_only,
            )
        except CollectionNotFound:
            ranked = []
        except ValueError as exc:
            raise ApiError(400, str(exc), code="invalid_value", param="filters") from None
        return [source(item.hit, item.rerank_score) for item in ranked]

    def answer(self, request: dict[str, Any], request_id: str, cancelled: Cancelled = never) -> dict[str, Any]:
        """Retrieval, then the chat model's answer from the sources: a RAG query as a job (or a non-streamed
        request) runs it. ``request`` is what ``web.schemas.rag.rag_query_input`` made of the query."""
        started = time.perf_counter()
        retrieval = request["retrieval"]
        retrieved = self.retrieve(retrieval, request_id)
        payload = {**request["generation"], "messages": messages(retrieval["query"], retrieved["sources"])}
        generating = time.perf_counter()
        call = self.dispatcher.start(request["model_id"], "chat", payload, request_id, streaming=True)
        events = self.dispatcher.events(call)
        try:
            for event in events:
                if cancelled():
                    raise RequestCancelled("the query was cancelled")
                if event["type"] == "done":
                    result = event["result"]
                    break
            else:
                raise ApiError(500, "the chat model ended without an answer", code="internal_error")
        finally:
            events.close()
        choice = result["choices"][0]
        body = {
            "answer": choice["content"],
            "retrieval_latency_ms": retrieved["retrieval_latency_ms"],
            "generation_latency_ms": round((time.perf_counter() - generating) * 1000, 1),
            "total_latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "finish_reason": choice["finish_reason"],
            "usage": result["usage"],
            "metadata": query_metadata(request, retrieved["embedding_model"], retrieved.get("rerank_model")),
        }
        if request["include_sources"]:
            body["sources"] = retrieved["sources"]
        return body

    # -- deletion -------------------------------------------------------------------------------------------

    def delete_document(self, collection: str, document_id: str, working: list[str]) -> dict[str, Any]:
        if document_store.get_collection(collection) is None:
            raise document_store.collection_not_found(collection)
        document = document_store.start_delete(collection, document_id, self.settings.rag_lease_seconds)
        if document is None:
            raise ApiError(
                404,
                f"Document '{document_id}' not found in collection '{collection}'",
                code="document_not_found",
                param="document_id",
            )
        working.append(document_id)
        deleted = self._remove_chunks(collection, document_id)
        document_store.remove_document(document_id)
        working.clear()
        return {"collection": collection, "document_id": document_id, "chunks_deleted": deleted, "status": "deleted"}

    def drop_collection(self, name: str) -> dict[str, Any]:
        documents, chunks = document_store.counts(name)
        if document_store.start_drop(name, self.settings.rag_lease_seconds) is None:
            raise document_store.collection_not_found(name)
        self._drop_store(name)
        document_store.finish_drop(name)
        return {"collection": name, "documents_deleted": documents, "chunks_deleted": chunks, "status": "deleted"}

    def _drop_store(self, name: str) -> int:
        try:
            return self.store.drop_collection(name)
        except CollectionNotFound:
            return 0

    # -- sweep ----------------------------------------------------------------------------------------------

    def sweep(self) -> dict[str, int]:
        """Undoes ingests and finishes deletes whose process died (their leases ran out)."""
        counts = {"undone": 0, "deleted": 0, "dropped": 0}
        for document in document_store.expired_documents():
            self._remove_chunks(document.collection, document.document_id)
            document_store.remove_document(document.document_id)
            counts["undone" if document.status == "ingesting" else "deleted"] += 1
            log.info("rag sweep: %s document %s (%s)", document.status, document.document_id, document.filename)
        for collection in document_store.expired_drops():
            self._drop_store(collection.name)
            document_store.finish_drop(collection.name)
            counts["dropped"] += 1
            log.info("rag sweep: finished dropping collection %s", collection.name)
        return counts


def _ready_only(hits: list[Hit]) -> list[Hit]:
    ready = document_store.ready_ids(sorted({hit.document_id for hit in hits}))
    return [hit for hit in hits if hit.document_id in ready]


def source(hit: Hit, rerank_score: float | None = None) -> dict[str, Any]:
    reranked = {"rerank_score": round(rerank_score, 6)} if rerank_score is not None else {}
    return {
        "chunk_id": hit.chunk_id,
        "text": hit.text,
        "score": round(hit.score, 4),
        **reranked,
        "metadata": {**hit.metadata, "file": hit.file, "page": hit.page, "document_id": hit.document_id},
    }
