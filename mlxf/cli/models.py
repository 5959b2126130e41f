"""``mlxf models`` / ``load`` / ``unload`` / ``pull``: the models the platform serves (``/v1/models``)."""

from __future__ import annotations

import re
from contextlib import nullcontext
from urllib.parse import quote

import click

from mlxf.cli.output import console, print_json, print_table
from mlxf.cli.session import Session, command_session

REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def model_path(model_id: str) -> str:
    """``/v1/models/<id>``: ids hold ``/`` (owner/name), sent percent-encoded."""
    return f"/v1/models/{quote(model_id, safe='')}"


@click.command()
@click.option("--type", "model_type", help="Only models of this type (lm, embeddings, rerank, ...).")
@command_session
def models(session: Session, model_type: str | None) -> None:
    """List the models: loaded, loading, failed, and the catalog's on-demand ones (available)."""
    listed = session.platform.get("/v1/models")
    if model_type:
        listed["data"] = [model for model in listed["data"] if model.get("type") == model_type]
    if session.as_json:
        print_json(listed)
        return
    print_table(
        ("ID", "TYPE", "STATUS", "MEMORY", "NODES"),
        (
            (
                m["id"],
                m.get("type"),
                m.get("status"),
                f"{m.get('vram_usage_gb') or 0:.2f} GB",
                ",".join(m.get("nodes", [])),
            )
            for m in listed["data"]
        ),
    )


def _load(session: Session, source: str, model_type: str, **options: object) -> None:
    body = {"model_path": source, "model_type": model_type, **{k: v for k, v in options.items() if v is not None}}
    with nullcontext() if session.as_json else console.status(f"loading {source}", spinner="dots"):
        loaded = session.platform.post("/v1/models/load", body)
    if session.as_json:
        print_json(loaded)
    else:
        click.echo(
            f"{loaded['model_id']}: loaded in {loaded['load_time_ms'] / 1000:.1f}s, "
            f"{loaded.get('vram_usage_gb', 0):.2f} GB on {', '.join(loaded.get('nodes', []))}"
        )


@click.command()
@click.argument("source")
@click.option("--type", "model_type", default="lm", show_default=True, help="The model type (the API lists them).")
@click.option("--id", "model_id", help="The id to serve it as (default: the catalog's, the repo's or the folder's).")
@click.option("--context-length", type=int)
@click.option("--replicas", type=int, help="Worker processes across nodes.")
@click.option("--node", help="The node to run it on.")
@command_session
def load(
    session: Session,
    source: str,
    model_type: str,
    model_id: str | None,
    context_length: int | None,
    replicas: int | None,
    node: str | None,
) -> None:
    """Load SOURCE (a catalog id, a Hugging Face repo id or a model folder on the server) and wait until it serves."""
    _load(session, source, model_type, model_id=model_id, context_length=context_length, replicas=replicas, node=node)


@click.command()
@click.argument("repo_id")
@click.option("--type", "model_type", default="lm", show_default=True, help="The model type (the API lists them).")
@click.option("--id", "model_id", help="The id to serve it as (default: the repo id).")
@command_session
def pull(session: Session, repo_id: str, model_type: str, model_id: str | None) -> None:
    """Fetch the Hugging Face model REPO_ID into the platform's cache and serve it.

    The API fetches a model only as part of a load (downloaded where it will run, unless cached); to fetch
    without serving, run ``python -m models.pull REPO_ID`` on the server."""
    if not REPO_ID.match(repo_id):
        raise click.BadParameter("a Hugging Face repo id is owner/name", param_hint="REPO_ID")
    _load(session, repo_id, model_type, model_id=model_id)


@click.command()
@click.argument("model_id")
@click.option("--force", is_flag=True, help="Unload even while requests run (they fail).")
@command_session
def unload(session: Session, model_id: str, force: bool) -> None:
    """Stop serving MODEL_ID and free its memory."""
    unloaded = session.platform.delete(f"{model_path(model_id)}/unload", force=str(force).lower())
    if session.as_json:
        print_json(unloaded)
    else:
        click.echo(f"{model_id}: {unloaded.get('status', 'unloaded')}")
