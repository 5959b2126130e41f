"""The lease a running job and a RAG ingest or delete hold on their MongoDB document (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from config.leases import Lease, as_update
from rag import document_store
from tasks import job_store

MOMENT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
JOB = Lease("lease_expires_at", holder="claim")


def test_a_lease_is_held_by_its_token_until_it_runs_out():
    fields = JOB.acquire(30, "run-1", MOMENT)
    assert fields == {"lease_expires_at": MOMENT + timedelta(seconds=30), "claim": "run-1"}
    assert JOB.held_by("run-1") == {"claim": "run-1"}
    job = SimpleNamespace(**fields)
    assert not JOB.has_expired(job, MOMENT + timedelta(seconds=29))
    assert JOB.has_expired(job, MOMENT + timedelta(seconds=31))


def test_a_date_mongodb_hands_back_without_a_time_zone_is_read_as_utc():
    job = SimpleNamespace(lease_expires_at=MOMENT.replace(tzinfo=None))
    assert JOB.has_expired(job, MOMENT + timedelta(seconds=1))
    assert not JOB.has_expired(SimpleNamespace(lease_expires_at=None), MOMENT)


def test_taking_a_lease_back_holds_only_while_it_is_still_out_of_date():
    assert JOB.expired_before(MOMENT) == {"lease_expires_at__lt": MOMENT}


def test_ending_a_lease_unsets_its_date_and_with_forget_holder_its_token():
    assert as_update(JOB.release()) == {"unset__lease_expires_at": True}
    assert as_update({"worker": None, "status": "queued", **JOB.release(forget_holder=True)}) == {
        "unset__worker": True,
        "set__status": "queued",
        "unset__lease_expires_at": True,
        "unset__claim": True,
    }


def test_a_lease_without_a_holder_has_only_a_date():
    rag = Lease("lease_until")
    assert set(rag.acquire(30)) == {"lease_until"}
    assert rag.held_by("anyone") == {}
    assert rag.release(forget_holder=True) == {"lease_until": None}


class Query:
    """Stands in for a mongoengine queryset: records the update and the filter it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def update(self, **changes):
        self.calls.append(("update", changes))
        return 2

    def filter(self, **conditions):
        self.calls.append(("filter", conditions))
        return ["a document"]


def test_renewing_moves_the_date_of_what_the_query_still_holds_and_a_sweep_finds_what_ran_out():
    query, rag = Query(), Lease("lease_until")
    assert rag.renew(query, 30) == 2
    assert list(query.calls[0][1]) == ["set__lease_until"]
    assert rag.sweep(query, MOMENT) == ["a document"]
    assert query.calls[1] == ("filter", {"lease_until__lt": MOMENT})


def test_existing_databases_keep_their_lease_fields():
    assert job_store.LEASE == JOB
    assert {"lease_expires_at", "claim"} <= set(job_store.Job._fields)
    assert document_store.LEASE == Lease("lease_until")
    assert "lease_until" in document_store.RagDocument._fields
    assert "lease_until" in document_store.RagCollection._fields
