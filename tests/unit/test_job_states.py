"""The job state machine: which moves are allowed from which status, and the events they emit."""

from __future__ import annotations

import pytest

from tasks.job_states import EVENTS, FINISHED, MOVES, STATUSES, event_id, target


@pytest.mark.parametrize(
    ("move", "status", "expected"),
    [
        ("claim", "queued", "processing"),
        ("claim", "processing", None),
        ("complete", "processing", "completed"),
        ("complete", "queued", None),
        ("fail", "processing", "failed"),
        ("fail_queued", "queued", "failed"),
        ("cancel", "queued", "cancelled"),
        ("cancel", "processing", "cancelled"),
        ("requeue", "processing", "queued"),
        ("requeue", "queued", None),
    ],
)
def test_moves(move, status, expected):
    assert target(move, status) == expected


@pytest.mark.parametrize("finished", FINISHED)
def test_nothing_leaves_a_finished_status(finished):
    assert all(target(name, finished) is None for name in MOVES)


def test_every_status_is_reachable_and_every_move_emits_a_known_event():
    reached = {"queued"} | {move.target for move in MOVES.values()}
    assert reached == set(STATUSES)
    assert {move.event for move in MOVES.values()} <= set(EVENTS)


def test_only_a_run_holding_the_claim_finishes_or_requeues_a_running_job():
    owned = {name for name, move in MOVES.items() if move.owned}
    assert owned == {"complete", "fail", "requeue"}


def test_event_ids_repeat_per_run_for_queued_and_processing_only():
    assert event_id("job-1", "job.queued", 0) != event_id("job-1", "job.queued", 1)
    assert event_id("job-1", "job.processing", 1) != event_id("job-1", "job.processing", 2)
    assert event_id("job-1", "job.completed", 1) == event_id("job-1", "job.completed", 2)
