"""Whether a worker serves its model, judged from its heartbeat report (``models.liveness.probe_verdict``)."""

from __future__ import annotations

from config.model_types import LIGHT, WARMUP, model_type
from config.settings import Settings
from models.liveness import ANSWERING, BUSY, STARTING, UNRESPONSIVE, probe_verdict, user_requests
from tasks.probes import probe_due_in, probe_interval, probe_retry

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


def test_a_request_answered_recently_counts_as_an_answer():
    assert probe_verdict(report(probe_answered_at=NOW - 60, answered_at=NOW - 2), NOW, MAX_AGE) == ANSWERING
    assert probe_verdict(report(probe_answered_at=NOW - 60, answered_at=NOW - 11), NOW, MAX_AGE) == UNRESPONSIVE


def test_a_worker_is_probed_at_once_then_only_after_an_interval_without_answers():
    assert probe_due_in(None, None, NOW, 30) == 0, "the first probe goes out when the worker starts"
    assert probe_due_in(None, NOW - 1, NOW, 30) == 0, "a first probe that failed is sent again"
    assert probe_due_in(NOW - 100, NOW - 10, NOW, 30) == 20, "a request 10 s ago proved the worker: no probe yet"
    assert probe_due_in(NOW - 100, NOW - 30, NOW, 30) == 0
    assert probe_due_in(NOW - 100, NOW - 100, NOW, 30) == 0, "nothing answered for longer than the interval"


def test_each_model_type_probes_at_its_own_interval_within_the_verdicts_max_age():
    settings = Settings(health_probe_interval_seconds=20, health_probe_max_age_seconds=90)
    assert probe_interval(settings, "lm") == probe_interval(settings, "embeddings") == 20
    assert probe_interval(settings, "whisper") == probe_interval(settings, "image-generation") == 40
    capped = Settings(health_probe_interval_seconds=30, health_probe_max_age_seconds=90)
    assert probe_interval(capped, "whisper") == 45, "kept under the max age, or a healthy worker would look stale"


def test_a_healthy_worker_that_loses_one_probe_still_answers_within_the_max_age():
    for interval, max_age in ((30, 90), (120, 240), (5, 90), (600, 90)):
        settings = Settings(health_probe_interval_seconds=interval, health_probe_max_age_seconds=max_age)
        for type_name in ("lm", "whisper", "image-edit"):
            every = probe_interval(settings, type_name)
            assert every + probe_retry(settings, every) < max_age, (interval, max_age, type_name)


def test_whispers_probe_is_its_cheapest_real_call_not_a_warm_up():
    assert model_type("whisper").probe == (WARMUP, {LIGHT: True})
