"""The choice of vector store from settings (the interface and its records are in ``rag.vectors``)."""

from __future__ import annotations

from config.settings import Settings
from rag.vectors import VectorStore


def make_store(settings: Settings) -> VectorStore:
    """Weaviate when ``WEAVIATE_URL`` is set, else LanceDB in ``VECTOR_DIR`` (default: the data dir's ``vectors``)."""
    if settings.weaviate_url:
        from rag.weaviate_store import WeaviateStore

        return WeaviateStore(
            settings.weaviate_url, api_key=settings.weaviate_api_key, grpc_port=settings.weaviate_grpc_port
        )
    from rag.lancedb_store import LanceDBStore

    return LanceDBStore(settings.vector_dir or settings.data_dir / "vectors")
