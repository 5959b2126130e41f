"""Text extraction from uploaded files: PDF (one part per page), HTML main text, Markdown and plain text."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING

import pypdfium2
import trafilatura
from bs4 import BeautifulSoup
from markdown_it import MarkdownIt
from markdown_it.token import Token

if TYPE_CHECKING:
    from lxml.html import HtmlElement

KINDS = ("pdf", "html", "markdown", "text")
"""The kinds of document ``extract`` reads."""

_EXTENSIONS = {
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
}

_PDF_MAGIC = b"%PDF-"
_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL)
_PDF_HYPHEN_MARK = re.compile("[\ufffe\x02][ \t]*(?:\r?\n)?")
"""pdfium's mark of a word hyphenated at a line end; it has already joined the line, or the break follows."""
_HYPHEN_AT_LINE_END = re.compile(r"(?<=\w)-\n(?=[a-z])")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_HEADER_LINK = re.compile(r"[ \t]*¶(?=[ \t]*$)", re.MULTILINE)
_NAVIGATION_RELS = {"next", "prev", "previous", "up", "contents", "index", "start", "first", "last"}
_NAVIGATION_BLOCKS = {"p", "div", "ul", "ol", "table", "header", "footer"}
_NAVIGATION_BLOCK_MAX_CHARS = 400


class ExtractionError(ValueError):
    """A file that cannot be read as a document; ``reason`` says why, in words meant for the uploader."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


@dataclass(frozen=True)
class Part:
    """A run of text: a page of a PDF (``page`` counts from 1), or a whole document of another kind."""

    text: str
    page: int | None = None


@dataclass(frozen=True)
class Document:
    filename: str
    kind: str
    parts: tuple[Part, ...]
    content_hash: str
    """sha256 of the uploaded bytes, hex."""

    @property
    def text(self) -> str:
        return "\n\n".join(part.text for part in self.parts if part.text)


def extract(filename: str, data: bytes) -> Document:
    """The text of ``data`` in parts, its kind told by the extension and the content.

    Raises ``ExtractionError`` for an empty, unsupported, unreadable or textless file.
    """
    if not data:
        raise ExtractionError(filename, "the file is empty")
    kind = detect_kind(filename, data)
    parts = _EXTRACTORS[kind](filename, data)
    if not any(part.text.strip() for part in parts):
        raise ExtractionError(filename, f"no text found in this {kind} file")
    return Document(filename, kind, tuple(parts), hashlib.sha256(data).hexdigest())


def detect_kind(filename: str, data: bytes) -> str:
    """One of ``KINDS``: PDF when the bytes say so, else the extension's, else HTML when the bytes look like it."""
    if _PDF_MAGIC in data[:1024]:
        return "pdf"
    extension = PurePath(filename).suffix.lower()
    kind = _EXTENSIONS.get(extension)
    if kind == "pdf":
        raise ExtractionError(filename, "not a PDF file (no %PDF header)")
    if kind is not None:
        return kind
    if _HTML_START.match(data[:4096]):
        return "html"
    supported = ", ".join(sorted(_EXTENSIONS))
    raise ExtractionError(filename, f"unsupported file type {extension or '(no extension)'!r}; supported: {supported}")


def _pdf(filename: str, data: bytes) -> list[Part]:
    try:
        pdf = pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        raise ExtractionError(filename, f"unreadable PDF ({exc})") from None
    try:
        parts = []
        for index in range(len(pdf)):
            page = pdf[index]
            try:
                textpage = page.get_textpage()
                try:
                    raw = textpage.get_text_range()
                finally:
                    textpage.close()
            finally:
                page.close()
            parts.append(Part(_clean_pdf_text(raw), page=index + 1))
        return parts
    except pypdfium2.PdfiumError as exc:
        raise ExtractionError(filename, f"unreadable PDF page ({exc})") from None
    finally:
        pdf.close()


def _clean_pdf_text(raw: str) -> str:
    text = raw.replace("\r\n", "\n").replace("\r", "\n")
    text = _PDF_HYPHEN_MARK.sub("", text)
    text = _HYPHEN_AT_LINE_END.sub("-", text)
    return _tidy(text)


def _html(filename: str, data: bytes) -> list[Part]:
    tree = trafilatura.load_html(data)
    if tree is None:
        raise ExtractionError(filename, "unreadable HTML")
    _drop_navigation(tree)
    text = trafilatura.extract(
        tree,
        output_format="markdown",
        include_tables=True,
        include_comments=False,
        include_links=False,
        include_images=False,
        favor_recall=True,
        with_metadata=False,
    )
    if not text or not text.strip():
        text = _html_fallback(data)
    return [Part(_tidy(_HEADER_LINK.sub("", text)))]


def _drop_navigation(tree: HtmlElement) -> None:
    """Remove navigation that main-text extraction keeps: ``<nav>``, ARIA navigation, and short blocks
    holding next/previous/up links (the bars between sections of Texinfo and Sphinx pages)."""
    doomed = tree.xpath("//nav | //*[@role='navigation']")
    for link in tree.xpath("//a[@rel]"):
        if not _NAVIGATION_RELS.intersection(link.get("rel", "").lower().split()):
            continue
        block = next((el for el in link.iterancestors() if el.tag in _NAVIGATION_BLOCKS), None)
        if block is not None and len(block.text_content()) <= _NAVIGATION_BLOCK_MAX_CHARS:
            doomed.append(block)
    for element in doomed:
        if element.getparent() is not None:
            element.drop_tree()


def _html_fallback(data: bytes) -> str:
    soup = BeautifulSoup(data, "lxml")
    for element in soup(["script", "style", "noscript", "template", "nav"]):
        element.decompose()
    for element in soup.find_all(attrs={"role": "navigation"}):
        element.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    return root.get_text("\n", strip=True)


def _markdown(filename: str, data: bytes) -> list[Part]:
    tokens = MarkdownIt("commonmark").enable("table").parse(_decode(filename, data))
    blocks: list[str] = []
    row: list[str] | None = None
    for token in tokens:
        if token.type == "tr_open":
            row = []
        elif token.type == "tr_close" and row is not None:
            blocks.append("\t".join(row))
            row = None
        elif token.type == "inline":
            text = _inline_text(token.children or [])
            if row is not None:
                row.append(text)
            else:
                blocks.append(text)
        elif token.type in ("fence", "code_block"):
            blocks.append(token.content.rstrip("\n"))
        elif token.type == "html_block":
            blocks.append(BeautifulSoup(token.content, "lxml").get_text(" ", strip=True))
    return [Part(_tidy("\n\n".join(block for block in blocks if block.strip())))]


def _inline_text(children: list[Token]) -> str:
    pieces = []
    for child in children:
        if child.type in ("text", "code_inline"):
            pieces.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            pieces.append("\n")
        elif child.type == "image":
            pieces.append(_inline_text(child.children or []))
    return "".join(pieces)


def _text(filename: str, data: bytes) -> list[Part]:
    return [Part(_tidy(_decode(filename, data).replace("\r\n", "\n").replace("\r", "\n")))]


def _decode(filename: str, data: bytes) -> str:
    """UTF-8 (with or without a BOM), else Windows-1252; binary content is refused."""
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ExtractionError(filename, "binary content, not text")
    for encoding in ("utf-8-sig", "utf-16", "cp1252"):
        if encoding == "utf-16" and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
            continue
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _tidy(text: str) -> str:
    lines = (line.rstrip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


_EXTRACTORS: dict[str, Callable[[str, bytes], list[Part]]] = {
    "pdf": _pdf,
    "html": _html,
    "markdown": _markdown,
    "text": _text,
}
