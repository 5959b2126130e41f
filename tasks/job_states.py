"""The job state machine: which move leads from which status to which, and the event each move emits.

Pure data and functions (no database): ``tasks.job_store`` turns each move into
one compare-and-set on MongoDB, and the unit tests check the machine itself.
"""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
BATCH_EVENTS = {
    "completed": "batch.completed",
    "expired": "batch.expired",
    "failed": "batch.failed",
    "cancelled": "batch.cancelled",
}
"""The event a batch's job also emits when it ends (besides its ``job.*`` event), by the status the batch ends in:
its job's, but for an expired batch, whose job completes (what was done is written)."""
EVENTS = ("job.queued", "job.processing", "job.completed", "job.failed", "job.cancelled", *BATCH_EVENTS.values())


@dataclass(frozen=True)
class Move:
    name: str
    sources: tuple[str, ...]
    target: str
    owned: bool
    """Only the run holding the job's claim token may make this move (from ``processing``)."""

    @property
    def event(self) -> str:
        return f"job.{self.target}"


MOVES: dict[str, Move] = {
    move.name: move
    for move in (
        Move("claim", ("queued",), "processing", owned=False),
        Move("complete", ("processing",), "completed", owned=True),
        Move("fail", ("processing",), "failed", owned=True),
        Move("fail_queued", ("queued",), "failed", owned=False),
        Move("cancel", ("queued", "processing"), "cancelled", owned=False),
        Move("requeue", ("processing",), "queued", owned=True),
    )
}


def target(move_name: str, status: str) -> str | None:
    """The status ``move_name`` leads to from ``status``; None when the move is not allowed from there."""
    move = MOVES[move_name]
    return move.target if status in move.sources else None


def event_id(job_id: str, event: str, attempts: int) -> str:
    """Unique per event of a job; queued and processing repeat when a job runs again, so they carry the run number."""
    repeatable = event in ("job.queued", "job.processing")
    return f"{job_id}.{event}" + (f".{attempts}" if repeatable else "")
