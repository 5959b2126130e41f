"""What the commands print: JSON for scripts (``--json``), else tables and progress bars for people."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlxf.job_view import describe_job, job_fraction

console = Console()
"""Tables and progress bars go to standard output; rich draws bars only on a terminal."""


WIDE = 1000
"""The width of a table printed for a pipe or a file: no cell cut short, whatever its length."""


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    (console if console.is_terminal else Console(width=WIDE)).print(table)


def job_progress(states: Iterator[dict[str, Any]], label: str) -> dict[str, Any]:
    """Follows a job (``Platform.job_states``) with a progress bar whose text is its status and what it is doing;
    the finished job."""
    job: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(label, total=1.0)
        for job in states:
            bar.update(task, completed=job_fraction(job), description=f"{label}: {describe_job(job)}")
    return job
