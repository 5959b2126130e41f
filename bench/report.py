"""What a section found: tables printed to the terminal, JSON under the results folder, and RESULTS.md."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Table:
    """One table of a section: a title, column names, and rows of plain values."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class SectionResult:
    """Everything one section reports; ``skipped`` says why it measured nothing."""

    name: str
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    charts: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


def cell(value: Any) -> str:
    """A value as a table shows it: a dash for missing, yes/no, and few decimals."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def text_table(table: Table) -> str:
    """The table aligned in columns for the terminal."""
    rows = [table.columns, *[[cell(v) for v in row] for row in table.rows]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(table.columns))]
    lines = [table.title, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows[1:]]
    return "\n".join(lines)


def markdown_table(table: Table) -> str:
    """The table in Markdown."""
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.rows]
    return "\n".join(lines)


def print_section(result: SectionResult) -> None:
    """Prints the section's tables and notes to stdout."""
    print(f"\n== {result.title} ==")
    if result.skipped:
        print(f"skipped: {result.skipped}")
    for table in result.tables:
        print(text_table(table), end="\n\n")
    for note in result.notes:
        print(f"- {note}")
    for chart in result.charts:
        print(f"chart: {chart}")


def write_json(result: SectionResult, out_dir: Path, context: dict[str, Any]) -> Path:
    """Writes ``<out_dir>/<section>.json`` with the section's findings and the run's context."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{result.name}.json"
    path.write_text(json.dumps({**asdict(result), **context}, indent=2, default=str))
    return path


def load_results(out_dir: Path, order: list[str]) -> list[dict[str, Any]]:
    """The sections' JSON files found in ``out_dir``, in ``order``."""
    found = []
    for name in order:
        path = out_dir / f"{name}.json"
        if path.exists():
            found.append(json.loads(path.read_text()))
    return found


def environment_lines(environment: dict[str, Any]) -> list[str]:
    """The machine, backend, versions, model and settings as short lines."""
    machine = environment.get("machine", {})
    versions = environment.get("versions", {})
    model = environment.get("model", {})
    lines = [
        f"date: {environment.get('date', '?')}",
        f"machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('memory_gb', '?')} GB, {machine.get('os', '?')}",
        f"backend: {environment.get('backend', '?')}",
        "versions: " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"model: {model.get('id', '?')}, weights {model.get('weights_format', '?')} ({model.get('source', '?')})",
        "settings: " + ", ".join(f"{k}={v}" for k, v in environment.get("settings", {}).items()),
    ]
    return lines


def results_markdown(results: list[dict[str, Any]], charts_dir: str = "bench/results") -> str:
    """A Markdown snippet with every section's tables and charts (linked from ``charts_dir``), for the README."""
    if not results:
        return "No benchmark results yet: run `make bench`.\n"
    latest = max(results, key=lambda r: r.get("finished_at", ""))
    parts = ["## Benchmarks", ""]
    parts += [f"- {line}" for line in environment_lines(latest.get("environment", {}))]
    if latest.get("options", {}).get("quick"):
        parts += ["", "> Smoke run (`--quick`): too few tokens and runs for the figures to mean much."]
    parts.append("")
    for result in results:
        parts += [f"### {result['title']}", ""]
        if result.get("skipped"):
            parts += [f"Skipped: {result['skipped']}", ""]
        for table in result.get("tables", []):
            parts += [markdown_table(Table(**table)), ""]
        parts += [f"- {note}" for note in result.get("notes", [])]
        if result.get("notes"):
            parts.append("")
        for chart in result.get("charts", []):
            parts += [f"![{result['title']}]({charts_dir}/{Path(chart).name})", ""]
        if result.get("finished_at") != latest.get("finished_at"):
            parts += [f"_Measured {result.get('finished_at', '?')[:16]}._", ""]
    return "\n".join(parts)
