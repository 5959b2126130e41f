"""What the reconciler does with a running job: leave it, look again, queue it again or fail it."""

from __future__ import annotations

from tasks.reconciler import verdict


def decide(**overrides):
    facts = dict(
        lease_expired=False,
        worker_alive=True,
        seen_dead_before=False,
        held_by_live_worker=False,
        attempts=1,
        max_attempts=3,
    )
    facts.update(overrides)
    return verdict(**facts)


def test_a_job_on_a_live_worker_with_a_lease_is_left_alone():
    assert decide() is None


def test_a_run_out_lease_takes_the_job_back_even_from_a_live_worker():
    assert decide(lease_expired=True) == "requeue"
    assert decide(lease_expired=True, attempts=3) == "fail"


def test_a_silent_worker_is_suspected_first_then_its_job_is_taken_back():
    assert decide(worker_alive=False) == "suspect"
    assert decide(worker_alive=False, seen_dead_before=True) == "requeue"
    assert decide(worker_alive=False, seen_dead_before=True, attempts=3) == "fail"


def test_a_silent_worker_that_still_holds_the_task_is_slow_not_dead():
    assert decide(worker_alive=False, seen_dead_before=True, held_by_live_worker=True) is None
