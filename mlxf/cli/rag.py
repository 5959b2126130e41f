"""``mlxf rag ingest COLLECTION FILES...`` (a job, with a progress bar), ``mlxf rag query COLLECTION QUESTION``
(the answer streamed, then its sources) and ``mlxf rag collections``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlxf.cli.output import job_progress, print_json, print_table
from mlxf.cli.session import Session, command_session


@click.group()
def rag() -> None:
    """Collections of documents and answers with their sources."""


@rag.command()
@click.argument("collection")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--chunk-size", type=int, help="Tokens a chunk (default: what the embedding model reads).")
@click.option("--overlap", type=int, help="Tokens shared by neighbouring chunks.")
@click.option("--embedding-model", help="Default: the platform's embedding model.")
@click.option(
    "--metadata", help='A JSON object given to every chunk (searchable with filters), e.g. \'{"source": "x"}\'.'
)
@command_session
def ingest(
    session: Session,
    collection: str,
    files: tuple[Path, ...],
    chunk_size: int | None,
    overlap: int | None,
    embedding_model: str | None,
    metadata: str | None,
) -> None:
    """Add FILES (PDF, text, Markdown, HTML) to COLLECTION: extracted, chunked and embedded as a job."""
    form = {"collection": collection, "async": "true", "chunk_size": chunk_size, "overlap": overlap}
    form.update(embedding_model=embedding_model, metadata=metadata)
    uploads = [("files", (path.name, path.read_bytes())) for path in files]
    accepted = session.platform.post(
        "/api/rag/ingest", data={k: str(v) for k, v in form.items() if v is not None}, files=uploads
    )
    states = session.platform.job_states(accepted["job_id"])
    if session.as_json:
        *_, finished = states
        print_json(finished)
    else:
        finished = job_progress(states, f"ingest into {collection}")
        if finished["status"] == "completed":
            result = finished["result"]
            duplicates = f", {len(result['duplicates'])} already there" if result.get("duplicates") else ""
            click.echo(
                f"{collection}: {result['documents_ingested']} documents, {result['chunks_created']} chunks{duplicates}"
            )
    if finished["status"] != "completed":
        raise click.ClickException(f"ingest {finished['status']}: {finished.get('error', '')}")


@rag.command()
@click.argument("collection")
@click.argument("question")
@click.option("--top-k", type=int, help="Sources to retrieve (default 5).")
@click.option("--model", "model_id", help="The chat model that answers (default: the platform's).")
@click.option("--threshold", type=float, help="Least cosine similarity of a source (default 0.7).")
@click.option("--hybrid", is_flag=True, help="Vector and full-text retrieval, fused.")
@click.option("--max-tokens", type=int)
@command_session
def query(
    session: Session,
    collection: str,
    question: str,
    top_k: int | None,
    model_id: str | None,
    threshold: float | None,
    hybrid: bool,
    max_tokens: int | None,
) -> None:
    """Answer QUESTION from COLLECTION: the answer as it is generated, then its numbered sources."""
    body: dict[str, Any] = {"query": question, "collection": collection, "retrieval_mode": "hybrid" if hybrid else None}
    body.update(top_k=top_k, model_id=model_id, similarity_threshold=threshold)
    if max_tokens is not None:
        body["generation_config"] = {"max_tokens": max_tokens}
    body = {k: v for k, v in body.items() if v is not None}
    if session.as_json:
        print_json(session.platform.post("/api/rag/query", body))
        return
    sources: list[dict[str, Any]] = []
    for event in session.platform.stream("/api/rag/query", {**body, "stream": True}):
        if event.get("object") == "rag.sources":
            sources = event.get("sources", [])
        elif event.get("object") == "rag.delta":
            click.echo(event["delta"], nl=False)
    click.echo()
    for number, source in enumerate(sources, start=1):
        where = source.get("metadata", {}).get("file", "?")
        page = source.get("metadata", {}).get("page")
        click.echo(f"[{number}] {where}{f', page {page}' if page is not None else ''} (score {source['score']:.2f})")


@rag.command()
@command_session
def collections(session: Session) -> None:
    """List the collections: documents, chunks, embedding model."""
    listed = session.platform.get("/api/rag/collections")
    if session.as_json:
        print_json(listed)
        return
    print_table(
        ("NAME", "DOCUMENTS", "CHUNKS", "CREATED"),
        (
            (c["name"], c.get("document_count"), c.get("chunk_count"), c.get("created_at"))
            for c in listed["collections"]
        ),
    )
