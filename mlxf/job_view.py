"""How far a job of the API has got, as a fraction and in words: what the CLI's bars and the MCP server's progress
notifications show."""

from __future__ import annotations

from typing import Any


def job_fraction(job: dict[str, Any]) -> float:
    """0 to 1: the job's ``progress`` while it runs (the share of tokens, chunks, steps or lines done), 1 once done."""
    return 1.0 if job.get("status") == "completed" else float(job.get("progress") or 0.0)


def describe_job(job: dict[str, Any]) -> str:
    """The job's status and, while it runs, what it is doing (an ingest's file and chunks; a queued job's place)."""
    status = job.get("status", "?")
    detail = job.get("progress_detail") or {}
    if status == "queued" and job.get("position_in_queue") is not None:
        return f"queued, {job['position_in_queue']} ahead"
    if status == "processing" and detail.get("chunks"):
        return f"{detail.get('file', 'file')}: {detail.get('chunks_embedded', 0)}/{detail['chunks']} chunks embedded"
    return status
