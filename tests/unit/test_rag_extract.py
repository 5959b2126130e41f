"""Extraction from real documents (Debian's bash and Python manuals, fetched by `make documents`); no services."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from rag import extract as extract_module
from rag.extract import Document, ExtractionError, detect_kind, extract

DOCUMENTS = Path(__file__).resolve().parents[2] / ".data" / "documents"
BASH_PDF = DOCUMENTS / "bash-doc/usr/share/doc/bash/bash.pdf"
BASHREF_HTML = DOCUMENTS / "bash-doc/usr/share/doc/bash/bashref.html"
PYTHON_JSON_HTML = DOCUMENTS / "python3.11-doc/usr/share/doc/python3.11/html/library/json.html"


def read(path: Path) -> bytes:
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make documents` to fetch the test documents")
    return path.read_bytes()


@pytest.fixture(scope="module")
def bash_manual() -> Document:
    return extract("bash.pdf", read(BASH_PDF))


def test_pdf_has_one_part_per_page_numbered_from_one(bash_manual):
    assert bash_manual.kind == "pdf"
    assert [part.page for part in bash_manual.parts] == list(range(1, 88))


def test_pdf_phrases_are_on_their_pages(bash_manual):
    pages = {part.page: part.text for part in bash_manual.parts}
    assert "Bash is an sh-compatible command language interpreter" in pages[1]
    assert "If bash is started with the name rbash" in pages[85]
    assert "If bash is started with the name rbash" not in pages[84]
    assert "use the bashbug command to submit a bug report" in pages[86]


def test_pdf_words_hyphenated_at_line_ends_are_joined(bash_manual):
    page_10 = bash_manual.parts[9].text
    # Printed as "arithmetic expres-" / "sion" across two lines of page 10.
    assert "value is evaluated as an arithmetic expression and added to the variable" in page_10
    assert "\ufffe" not in bash_manual.text and "\x02" not in bash_manual.text
    assert "\r" not in bash_manual.text


def test_content_hash_is_the_sha256_of_the_bytes(bash_manual):
    assert bash_manual.content_hash == hashlib.sha256(BASH_PDF.read_bytes()).hexdigest()


def test_sphinx_page_keeps_its_main_text_without_navigation():
    document = extract("json.html", read(PYTHON_JSON_HTML))
    assert document.kind == "html" and [part.page for part in document.parts] == [None]
    text = document.text
    assert "JSON (JavaScript Object Notation)" in text
    assert "Be cautious when parsing JSON data from untrusted sources" in text
    assert "json.dumps" in text
    for navigation in ("Quick search", "Previous topic", "Next topic", "Report a Bug", "Show Source", "modules |"):
        assert navigation not in text, navigation
    assert "¶" not in text


def test_texinfo_page_loses_its_next_previous_up_bars():
    text = extract("bashref.html", read(BASHREF_HTML)).text
    assert "Bash is the shell, or command language interpreter" in text
    assert "Next: " not in text and "Previous: " not in text
    assert "[Contents][Index]" not in text.replace("\\", "")


def test_html_falls_back_to_the_main_element_when_trafilatura_finds_nothing(monkeypatch):
    """A stand-in, said plainly: no real page tried here makes trafilatura return nothing, so its answer is
    replaced by None to reach the fallback; the HTML and BeautifulSoup that parse it are real."""
    monkeypatch.setattr(extract_module.trafilatura, "extract", lambda *args, **kwargs: None)
    html = (
        b"<!doctype html><html><body><nav><a href='/'>Home</a> <a href='/docs'>Docs</a></nav>"
        b"<main><h1>Release notes</h1><p>Chunks now keep their page.</p></main>"
        b"<footer>Copyright</footer><script>track()</script></body></html>"
    )
    text = extract("notes.html", html).text
    assert "Release notes" in text and "Chunks now keep their page." in text
    assert "Home" not in text and "Copyright" not in text and "track" not in text


def test_markdown_keeps_text_and_drops_markup():
    markdown = "\n".join(
        [
            "# Installing *mlx-fusion*",
            "",
            "Run `make setup` first, then read [the guide](https://example.org/guide).",
            "",
            "- **fast** start",
            "- a [link](http://x) item",
            "",
            "```python",
            "print('hello')",
            "```",
            "",
            "| name | size |",
            "|------|------|",
            "| base | 512  |",
            "",
            "> quoted _note_",
        ]
    ).encode()
    document = extract("README.md", markdown)
    text = document.text
    assert document.kind == "markdown"
    for kept in ("Installing mlx-fusion", "Run make setup first, then read the guide.", "fast start", "link item"):
        assert kept in text, kept
    assert "print('hello')" in text and "base\t512" in text and "quoted note" in text
    for markup in ("#", "*", "`", "](", "https://example.org", "|---", "> ", "_note_"):
        assert markup not in text, markup


def test_text_is_utf8_with_a_fallback_decoding():
    assert extract("notes.txt", "naïve café\r\nline two".encode()).text == "naïve café\nline two"
    assert extract("notes.txt", "naïve café".encode("cp1252")).text == "naïve café"
    assert extract("notes.txt", b"\xef\xbb\xbfwith a BOM").text == "with a BOM"


def test_kind_comes_from_the_extension_and_the_content():
    assert detect_kind("scan", read(BASH_PDF)) == "pdf"
    assert detect_kind("page", b"<!DOCTYPE html><html><body>x</body></html>") == "html"
    assert detect_kind("notes.MD", b"# x") == "markdown"
    assert detect_kind("page.htm", b"<p>x</p>") == "html"


def test_corrupt_pdf_names_the_file():
    truncated = read(BASH_PDF)[:2000]
    with pytest.raises(ExtractionError) as raised:
        extract("broken.pdf", truncated)
    assert raised.value.filename == "broken.pdf"
    assert "broken.pdf" in str(raised.value) and "PDF" in raised.value.reason


def test_a_pdf_extension_without_pdf_content_is_refused():
    with pytest.raises(ExtractionError, match=r"fake\.pdf: not a PDF"):
        extract("fake.pdf", b"just some text")


@pytest.mark.parametrize(
    ("filename", "data", "reason"),
    [
        ("slides.pptx", b"PK\x03\x04 zipped", "unsupported file type '.pptx'"),
        ("noextension", b"plain words", "unsupported file type '(no extension)'"),
        ("empty.txt", b"", "the file is empty"),
        ("blank.md", b"  \n\n ", "no text found"),
        ("binary.txt", b"\x00\x01\x02binary", "binary content"),
    ],
)
def test_unusable_files_raise_extraction_error_naming_the_file(filename, data, reason):
    with pytest.raises(ExtractionError) as raised:
        extract(filename, data)
    assert raised.value.filename == filename
    assert reason in raised.value.reason
    assert str(raised.value).startswith(f"{filename}: ")
