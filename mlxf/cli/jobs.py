"""``mlxf jobs`` / ``mlxf job ID [--watch]`` / ``mlxf cancel ID``: the platform's MCP jobs (``/api/mcp/jobs``)."""

from __future__ import annotations

import click

from mlxf.cli.output import job_progress, print_json, print_table
from mlxf.cli.session import Session, command_session
from mlxf.client import FINISHED
from mlxf.job_view import describe_job


@click.command()
@click.option("--status", help="Only jobs in this status (queued, processing, completed, failed, cancelled).")
@click.option("--model", "model_id", help="Only jobs of this model.")
@click.option("--limit", type=int, default=20, show_default=True)
@command_session
def jobs(session: Session, status: str | None, model_id: str | None, limit: int) -> None:
    """List jobs, newest first."""
    listed = session.platform.get("/api/mcp/jobs", status=status, model_id=model_id, limit=limit)
    if session.as_json:
        print_json(listed)
        return
    print_table(
        ("JOB", "OPERATION", "MODEL", "STATUS", "CREATED"),
        (
            (j["job_id"], j.get("operation"), j.get("model_id"), describe_job(j), j.get("created_at"))
            for j in listed["jobs"]
        ),
    )


@click.command()
@click.argument("job_id")
@click.option("--watch", is_flag=True, help="Follow it with a progress bar until it has finished.")
@command_session
def job(session: Session, job_id: str, watch: bool) -> None:
    """Show JOB_ID: its status, progress, result or error."""
    if watch and not session.as_json:
        shown = job_progress(session.platform.job_states(job_id), job_id)
    elif watch:
        *_, shown = session.platform.job_states(job_id)
    else:
        shown = session.platform.get(f"/api/mcp/jobs/{job_id}")
    if session.as_json:
        print_json(shown)
        return
    click.echo(f"{shown['job_id']}  {shown.get('operation')}  {shown.get('model_id')}  {shown['status']}")
    if shown.get("error"):
        click.echo(f"error: {shown['error']}")
    if shown.get("result") is not None:
        print_json(shown["result"])
    if watch and shown["status"] != "completed" and shown["status"] in FINISHED:
        raise SystemExit(1)


@click.command()
@click.argument("job_id")
@command_session
def cancel(session: Session, job_id: str) -> None:
    """Cancel JOB_ID (a finished job cannot be: the API answers 409)."""
    cancelled = session.platform.delete(f"/api/mcp/jobs/{job_id}")
    if session.as_json:
        print_json(cancelled)
    else:
        click.echo(f"{job_id}: {cancelled['status']}")
