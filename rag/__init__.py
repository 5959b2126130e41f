"""Retrieval-augmented generation: extraction, chunking, vector stores, ingest and query (to come)."""
