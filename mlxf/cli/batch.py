"""``mlxf batch FILE.jsonl [--wait]``: OpenAI's Batch API from a terminal (upload, create, follow, fetch)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlxf.cli.output import console, print_json
from mlxf.cli.session import Session, command_session

FINISHED = ("completed", "failed", "cancelled", "expired")
POLL_SECONDS = 0.5
"""How often a waited batch is looked at (the Batch API has no long poll)."""


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--endpoint", help="Default: the url of the file's first line.")
@click.option("--wait", is_flag=True, help="Follow it with a progress bar until it has finished.")
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="With --wait: write the output file here."
)
@command_session
def batch(session: Session, file: Path, endpoint: str | None, wait: bool, output: Path | None) -> None:
    """Run the requests of FILE (JSONL: custom_id, method, url, body a line) as a batch."""
    content = file.read_bytes()
    endpoint = endpoint or _first_url(content)
    uploaded = session.platform.post("/v1/files", data={"purpose": "batch"}, files={"file": (file.name, content)})
    created = session.platform.post(
        "/v1/batches", {"input_file_id": uploaded["id"], "endpoint": endpoint, "completion_window": "24h"}
    )
    finished = _follow(session, created) if wait else created
    if session.as_json:
        print_json(finished)
    else:
        counts = finished.get("request_counts") or {}
        click.echo(
            f"{finished['id']}: {finished['status']}, {counts.get('completed', 0)} completed, "
            f"{counts.get('failed', 0)} failed of {counts.get('total', 0)}"
        )
    if wait and output is not None and finished.get("output_file_id"):
        output.write_bytes(session.platform.raw(f"/v1/files/{finished['output_file_id']}/content"))
    if wait and finished["status"] != "completed":
        raise SystemExit(1)


def _first_url(content: bytes) -> str:
    for line in content.splitlines():
        if line.strip():
            try:
                return json.loads(line)["url"]
            except (ValueError, KeyError, TypeError):
                raise click.BadParameter("its first line has no url: give --endpoint", param_hint="FILE") from None
    raise click.BadParameter("the file has no request", param_hint="FILE")


def _follow(session: Session, created: dict[str, Any]) -> dict[str, Any]:
    """The batch, looked at every ``POLL_SECONDS`` (a bar of the lines done, unless JSON) until it has finished."""
    current = created
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=session.as_json,
    ) as bar:
        task = bar.add_task(created["id"], total=None)
        while True:
            counts = current.get("request_counts") or {}
            done = counts.get("completed", 0) + counts.get("failed", 0)
            bar.update(task, completed=done, total=counts.get("total") or None, description=current["status"])
            if current["status"] in FINISHED:
                return current
            time.sleep(POLL_SECONDS)
            current = session.platform.get(f"/v1/batches/{created['id']}")
