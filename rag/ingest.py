"""Turning uploaded files into chunk records: extract, chunk in the embedding model's tokens, attach vectors."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.chunking import Chunk, chunk_document
from rag.extract import Document, extract
from rag.vectors import ChunkRecord

SPECIAL_TOKENS = 2
"""[CLS] and [SEP]: what a BERT-family embedding model adds to every chunk."""


@dataclass(frozen=True)
class Prepared:
    """One uploaded file, read and cut, not yet embedded."""

    document: Document
    chunks: list[Chunk]


def prepare(filename: str, data: bytes, tokenizer_dir: Path | str, chunk_size: int, overlap: int) -> Prepared:
    """Raises ``ExtractionError`` (naming the file) for a file that cannot be read."""
    document = extract(filename, data)
    return Prepared(document, chunk_document(document, tokenizer_dir, chunk_size, overlap))


def max_chunk_tokens(model_dir: Path | str, context_length: int | None) -> int:
    """The longest chunk the embedding model reads whole: its sentence-transformers ``max_seq_length`` (the
    length it was trained on) when the folder says, else its context length, less its special tokens."""
    limit = context_length or 512
    config = Path(model_dir) / "sentence_bert_config.json"
    if config.is_file():
        limit = min(limit, int(json.loads(config.read_text()).get("max_seq_length") or limit))
    return limit - SPECIAL_TOKENS


def chunk_id(document_id: str, index: int) -> str:
    return f"{document_id}_chunk_{index}"


def chunk_records(
    document_id: str,
    prepared: Prepared,
    vectors: Sequence[Sequence[float]],
    metadata: Mapping[str, Any],
) -> list[ChunkRecord]:
    return [
        ChunkRecord(
            chunk_id=chunk_id(document_id, chunk.index),
            vector=vector,
            text=chunk.text,
            document_id=document_id,
            file=prepared.document.filename,
            page=chunk.page,
            chunk_index=chunk.index,
            metadata=metadata,
        )
        for chunk, vector in zip(prepared.chunks, vectors, strict=True)
    ]
