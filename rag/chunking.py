"""Token chunking with overlap: a document's parts cut at natural boundaries (semchunk), sized in the tokens
of the embedding model."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import semchunk
from tokenizers import Tokenizer

from rag.extract import Document

MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 8192
DEFAULT_CHUNK_SIZE = 512
DEFAULT_OVERLAP = 64


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: ``text == part text[start:end]`` of part ``part`` (page ``page`` of a PDF)."""

    index: int
    text: str
    part: int
    page: int | None
    start: int
    end: int
    token_count: int
    """Tokens of ``text`` without the model's special tokens ([CLS], [SEP], ...)."""


def validate_chunking(chunk_size: int, overlap: int) -> None:
    """Raise ``ValueError`` naming ``chunk_size`` or ``overlap`` when out of range."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise ValueError(f"chunk_size must be an integer (got {chunk_size!r})")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} tokens (got {chunk_size})")
    if isinstance(overlap, bool) or not isinstance(overlap, int):
        raise ValueError(f"overlap must be an integer (got {overlap!r})")
    if not 0 <= overlap < chunk_size:
        raise ValueError(f"overlap must be at least 0 and less than chunk_size {chunk_size} (got {overlap})")


def chunk_document(
    document: Document,
    tokenizer_dir: Path | str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """``document`` in chunks of at most ``chunk_size`` tokens of the tokenizer in ``tokenizer_dir``
    (its ``tokenizer.json``), consecutive chunks of a part sharing about ``overlap`` tokens.

    Chunks never span parts, so each keeps its page.
    """
    validate_chunking(chunk_size, overlap)
    count_tokens = token_counter(str(Path(tokenizer_dir).resolve()))
    chunker = _chunker(count_tokens, chunk_size)
    chunks: list[Chunk] = []
    for part_index, part in enumerate(document.parts):
        if not part.text.strip():
            continue
        _, offsets = chunker(part.text, offsets=True, overlap=overlap or None)
        for start, end in offsets:
            end, tokens = _fit(part.text, start, end, chunk_size, count_tokens)
            chunks.append(Chunk(len(chunks), part.text[start:end], part_index, part.page, start, end, tokens))
    return chunks


class TokenCounter:
    """Counts tokens as the model whose ``tokenizer.json`` is in a folder sees them, without truncation or special
    tokens."""

    def __init__(self, tokenizer_dir: Path | str) -> None:
        path = Path(tokenizer_dir) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {tokenizer_dir}")
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        self.max_token_chars = max(len(token) for token in self.tokenizer.get_vocab())

    def __call__(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def end_of_first(self, text: str, tokens: int) -> int:
        """The character offset in ``text`` where its first ``tokens`` tokens end."""
        return self.tokenizer.encode(text, add_special_tokens=False).offsets[tokens - 1][1]


@functools.lru_cache(maxsize=8)
def token_counter(tokenizer_dir: str) -> TokenCounter:
    return TokenCounter(tokenizer_dir)


@functools.lru_cache(maxsize=32)
def _chunker(count_tokens: TokenCounter, chunk_size: int) -> semchunk.Chunker:
    return semchunk.chunkerify(count_tokens, chunk_size, max_token_chars=count_tokens.max_token_chars)


def _fit(text: str, start: int, end: int, chunk_size: int, count_tokens: TokenCounter) -> tuple[int, int]:
    """``end`` moved back until ``text[start:end]`` has at most ``chunk_size`` tokens, and that count.

    semchunk sizes the pieces it joins into an overlapping chunk; joined, a word cut between two pieces can
    tokenize longer, so each chunk is counted again.
    """
    tokens = count_tokens(text[start:end])
    while tokens > chunk_size:
        end = start + count_tokens.end_of_first(text[start:end], chunk_size)
        tokens = count_tokens(text[start:end])
    return end, tokens
