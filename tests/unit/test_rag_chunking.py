"""Token chunking with the embedding model's own tokenizer, on the bash manual; no services."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from rag.chunking import chunk_document, validate_chunking
from rag.extract import Document, Part, extract

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_DIR = ROOT / ".data/models/sentence-transformers--all-MiniLM-L6-v2"
BASH_PDF = ROOT / ".data/documents/bash-doc/usr/share/doc/bash/bash.pdf"


@pytest.fixture(scope="module")
def count_tokens():
    if not (TOKENIZER_DIR / "tokenizer.json").is_file():
        pytest.fail(f"{TOKENIZER_DIR} has no tokenizer.json: run `make models`")
    tokenizer = Tokenizer.from_file(str(TOKENIZER_DIR / "tokenizer.json"))
    tokenizer.no_truncation()  # tokenizer.json truncates and pads to 128 tokens for the model
    tokenizer.no_padding()
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


@pytest.fixture(scope="module")
def bash_manual() -> Document:
    if not BASH_PDF.is_file():
        pytest.fail(f"{BASH_PDF} is missing: run `make documents` to fetch the test documents")
    return extract("bash.pdf", BASH_PDF.read_bytes())


@pytest.mark.parametrize(("chunk_size", "overlap"), [(512, 64), (128, 16), (64, 0), (16, 15)])
def test_no_chunk_exceeds_chunk_size_tokens(bash_manual, count_tokens, chunk_size, overlap):
    chunks = chunk_document(bash_manual, TOKENIZER_DIR, chunk_size, overlap)
    assert chunks
    for chunk in chunks:
        assert chunk.token_count == count_tokens(chunk.text) <= chunk_size
    assert max(chunk.token_count for chunk in chunks) > chunk_size * 0.8


def test_chunks_keep_their_page_offsets_and_order(bash_manual):
    chunks = chunk_document(bash_manual, TOKENIZER_DIR, 256, 32)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert {chunk.page for chunk in chunks} == set(range(1, 88))
    for chunk in chunks:
        part = bash_manual.parts[chunk.part]
        assert chunk.page == part.page
        assert part.text[chunk.start : chunk.end] == chunk.text
    rbash = [chunk for chunk in chunks if "If bash is started with the name rbash" in chunk.text]
    assert rbash and {chunk.page for chunk in rbash} == {85}


def test_consecutive_chunks_of_a_page_overlap(bash_manual, count_tokens):
    chunks = chunk_document(bash_manual, TOKENIZER_DIR, 128, 32)
    pairs = [(first, second) for first, second in zip(chunks, chunks[1:], strict=False) if first.part == second.part]
    assert len(pairs) > 100
    shared_tokens = []
    for first, second in pairs:
        assert first.start < second.start < first.end, (first, second)
        shared_tokens.append(count_tokens(bash_manual.parts[first.part].text[second.start : first.end]))
    # semchunk overlaps by whole pieces cut at natural boundaries: up to the overlap, never past it.
    assert min(shared_tokens) >= 1 and max(shared_tokens) <= 32
    assert sorted(shared_tokens)[len(shared_tokens) // 2] >= 16


def test_without_overlap_chunks_do_not_overlap(bash_manual):
    chunks = chunk_document(bash_manual, TOKENIZER_DIR, 128, 0)
    for first, second in zip(chunks, chunks[1:], strict=False):
        if first.part == second.part:
            assert second.start >= first.end


def test_a_short_text_is_one_chunk_and_blank_parts_none():
    document = Document("notes.txt", "text", (Part("  "), Part("Chunks keep their page.")), "0" * 64)
    chunks = chunk_document(document, TOKENIZER_DIR)
    assert [(chunk.text, chunk.part, chunk.page, chunk.start) for chunk in chunks] == [
        ("Chunks keep their page.", 1, None, 0)
    ]


@pytest.mark.parametrize(
    ("chunk_size", "overlap", "message"),
    [
        (15, 0, "chunk_size must be between 16 and 8192"),
        (8193, 0, "chunk_size must be between 16 and 8192"),
        (512.0, 64, "chunk_size must be an integer"),
        (True, 0, "chunk_size must be an integer"),
        (512, -1, "overlap must be at least 0 and less than chunk_size 512"),
        (512, 512, "overlap must be at least 0 and less than chunk_size 512"),
        (512, "64", "overlap must be an integer"),
    ],
)
def test_bad_parameters_are_rejected_naming_them(chunk_size, overlap, message):
    with pytest.raises(ValueError, match=message):
        validate_chunking(chunk_size, overlap)
    document = Document("notes.txt", "text", (Part("text"),), "0" * 64)
    with pytest.raises(ValueError, match=message):
        chunk_document(document, TOKENIZER_DIR, chunk_size, overlap)


def test_a_folder_without_a_tokenizer_is_named(tmp_path):
    document = Document("notes.txt", "text", (Part("text"),), "0" * 64)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json in"):
        chunk_document(document, tmp_path)
