"""Whether a worker serves its model, judged from its heartbeat report (``models.liveness.probe_verdict``)."""

from __future__ import annotations

from models.liveness import ANSWERING, BUSY, STARTING, UNRESPONSIVE, probe_verdict, user_requests

NOW = 1_000_000.0
MAX_AGE = 10.0


def report(**fields):
    return {"started_at": NOW - 100, "active": 0, "stalled": False, "probe_answered_at": None, **fields}


def test_a_recent_answer_is_answering_and_an_old_one_is_not():
    assert probe_verdict(report(probe_answered_at=NOW - 9), NOW, MAX_AGE) == ANSWERING
    assert probe_verdict(report(probe_answered_at=NOW - 11), NOW, MAX_AGE) == UNRESPONSIVE


def test_a_silent_worker_is_unresponsive():
    assert probe_verdict(None, NOW, MAX_AGE) == UNRESPONSIVE


def test_a_stalled_engine_is_unresponsive_even_after_a_recent_answer():
    assert probe_verdict(report(probe_answered_at=NOW - 1, active=1, stalled=True), NOW, MAX_AGE) == UNRESPONSIVE


def test_an_engine_serving_others_is_busy_while_its_probe_waits():
    assert probe_verdict(report(probe_answered_at=NOW - 60, active=3), NOW, MAX_AGE) == BUSY


def test_a_new_worker_is_starting_until_its_first_probe_is_overdue():
    assert probe_verdict(report(started_at=NOW - 5), NOW, MAX_AGE) == STARTING
    assert probe_verdict(report(started_at=NOW - 11), NOW, MAX_AGE) == UNRESPONSIVE


def test_a_health_probe_in_the_engine_is_not_a_request_anyone_waits_on():
    assert user_requests({"active": 1, "queued": 0, "probe_in_flight": True}) == 0
    assert user_requests({"active": 1, "queued": 1, "probe_in_flight": True}) == 1
    assert user_requests({"active": 2, "queued": 0, "probe_in_flight": False}) == 2
    assert user_requests({"active": 0, "queued": 0, "probe_in_flight": True}) == 0, "the probe already left"
