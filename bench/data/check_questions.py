"""Check the judged retrieval questions in rag_questions.jsonl against the extracted text of bash.pdf.

    .venv/bin/python bench/data/check_questions.py [--questions FILE] [--pdf FILE]

Extracts Debian's bash-doc bash.pdf with the project's own extractor (rag.extract) and checks every
question: its fields, a unique id, one page or two adjacent pages, and an evidence string of 20-120
characters that occurs, after whitespace normalisation, in the extracted text of one of its listed
pages. Also checks the set as a whole: at least 100 questions, at least 40 of kind "paraphrase".
Prints a summary; exits 1 on any failure (2 when the PDF is missing: run `make documents`).
Evidence that also occurs on pages a question does not list is reported as a note, not a failure.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from rag.extract import extract  # noqa: E402

DEFAULT_QUESTIONS = HERE / "rag_questions.jsonl"
DEFAULT_PDF = ROOT / ".data/documents/bash-doc/usr/share/doc/bash/bash.pdf"

FIELDS = {"id": str, "question": str, "file": str, "pages": list, "evidence": str, "kind": str, "section": str}
KINDS = ("lexical", "paraphrase")
ID_PATTERN = re.compile(r"^bash-\d{3,}$")
EVIDENCE_CHARS = (20, 120)
MIN_QUESTIONS = 100
MIN_PARAPHRASE = 40


def normalise(text: str) -> str:
    return " ".join(text.split())


def check(rows: list[tuple[int, str]], pages: dict[int, str]) -> tuple[list[str], list[str], list[dict]]:
    """Failures, notes, and the questions that parsed."""
    failures: list[str] = []
    notes: list[str] = []
    questions: list[dict] = []
    seen: dict[str, int] = {}
    for line_number, line in rows:
        where = f"line {line_number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            failures.append(f"{where}: not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            failures.append(f"{where}: not a JSON object")
            continue
        where = f"line {line_number} ({row.get('id', 'no id')})"
        problems = []
        for field, kind in FIELDS.items():
            if not isinstance(row.get(field), kind):
                problems.append(f"field {field!r} missing or not a {kind.__name__}")
        extra = set(row) - set(FIELDS)
        if extra:
            problems.append(f"unknown fields {sorted(extra)}")
        if problems:
            failures.extend(f"{where}: {problem}" for problem in problems)
            continue
        questions.append(row)
        if not ID_PATTERN.match(row["id"]):
            failures.append(f"{where}: id should look like bash-001")
        if row["id"] in seen:
            failures.append(f"{where}: id already used on line {seen[row['id']]}")
        seen.setdefault(row["id"], line_number)
        if row["file"] != "bash.pdf":
            failures.append(f"{where}: file is {row['file']!r}, expected 'bash.pdf'")
        if row["kind"] not in KINDS:
            failures.append(f"{where}: kind {row['kind']!r} not one of {KINDS}")
        if not row["question"].strip() or not row["section"].strip():
            failures.append(f"{where}: empty question or section")
        listed = row["pages"]
        if not listed or len(listed) > 2 or not all(isinstance(p, int) and not isinstance(p, bool) for p in listed):
            failures.append(f"{where}: pages must be one or two page numbers, got {listed!r}")
            continue
        if any(p not in pages for p in listed):
            failures.append(f"{where}: pages {listed} outside 1-{max(pages)}")
            continue
        if len(listed) == 2 and listed[1] != listed[0] + 1:
            failures.append(f"{where}: two pages must be adjacent and in order, got {listed}")
        evidence = normalise(row["evidence"])
        low, high = EVIDENCE_CHARS
        if not low <= len(row["evidence"]) <= high:
            failures.append(f"{where}: evidence is {len(row['evidence'])} characters, expected {low}-{high}")
        if not any(evidence in pages[p] for p in listed):
            elsewhere = [p for p in sorted(pages) if evidence in pages[p]]
            hint = f" (it is on page(s) {elsewhere})" if elsewhere else " (not on any page)"
            failures.append(f"{where}: evidence {row['evidence']!r} not on page(s) {listed}{hint}")
        else:
            elsewhere = [p for p in sorted(pages) if p not in listed and evidence in pages[p]]
            if elsewhere:
                notes.append(f"{row['id']}: evidence also occurs on unlisted page(s) {elsewhere}")
        if evidence in normalise(row["question"]):
            failures.append(f"{where}: the question contains its evidence verbatim")
    kinds = Counter(q["kind"] for q in questions)
    if len(questions) < MIN_QUESTIONS:
        failures.append(f"only {len(questions)} questions, need at least {MIN_QUESTIONS}")
    if kinds["paraphrase"] < MIN_PARAPHRASE:
        failures.append(f"only {kinds['paraphrase']} paraphrase questions, need at least {MIN_PARAPHRASE}")
    return failures, notes, questions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS, help="the JSONL file to check")
    parser.add_argument("--pdf", type=Path, default=DEFAULT_PDF, help="bash.pdf from Debian's bash-doc")
    parser.add_argument("--notes", action="store_true", help="list every note, not only their count")
    args = parser.parse_args(argv)

    if not args.pdf.is_file():
        print(f"FAIL: {args.pdf} not found; run `make documents` (Debian's bash-doc package)", file=sys.stderr)
        return 2
    document = extract(args.pdf.name, args.pdf.read_bytes())
    pages = {part.page: normalise(part.text) for part in document.parts if part.page is not None}
    rows = [
        (number, line)
        for number, line in enumerate(args.questions.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip()
    ]
    failures, notes, questions = check(rows, pages)

    kinds = Counter(q["kind"] for q in questions)
    covered = sorted({p for q in questions for p in q["pages"] if isinstance(p, int)})
    uncovered = [p for p in sorted(pages) if p not in covered]
    sections = Counter(q["section"].split(" > ")[0] for q in questions)
    shown = args.questions.resolve()
    print(shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown)
    print(f"  document: {args.pdf.name}, {len(pages)} pages, sha256 {document.content_hash[:16]}...")
    print(f"  questions: {len(questions)} ({', '.join(f'{kinds[k]} {k}' for k in KINDS)})")
    print(f"  two-page questions: {sum(1 for q in questions if len(q['pages']) == 2)}")
    print(f"  pages with a question: {len(covered)} of {len(pages)}; without: {uncovered or 'none'}")
    print(f"  top-level sections: {len(sections)}")
    for name, count in sorted(sections.items(), key=lambda item: -item[1]):
        print(f"    {count:4d}  {name}")
    if notes:
        hint = "" if args.notes else " (--notes lists them)"
        print(f"  notes: {len(notes)} evidence string(s) also occur on pages not listed{hint}")
        if args.notes:
            for note in notes:
                print(f"    {note}")
    if failures:
        print(f"FAIL: {len(failures)} problem(s)")
        for failure in failures:
            print(f"  {failure}")
        return 1
    print("OK: every evidence string is on a listed page")
    return 0


if __name__ == "__main__":
    sys.exit(main())
