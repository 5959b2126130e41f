"""Retrieval-augmented generation: text extraction, token chunking and the vector stores (ingest and query to come)."""
