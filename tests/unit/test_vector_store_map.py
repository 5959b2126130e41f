"""What the vector stores and job events compute without a service: OpenAI filters as equality filters (others
refused naming ``filters``), list pages after or before a cursor, a static chunking strategy, a chunk as a search
result, and a job's stored events after a ``Last-Event-ID``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from config.errors import ApiError
from tasks import job_watch
from tasks import vector_store_map as stores
from tasks.job_store import Job


def test_eq_filters_alone_or_joined_by_and_are_equality_filters():
    assert stores.equality_filters(None) is None
    assert stores.equality_filters({"type": "eq", "key": "topic", "value": "otters"}) == {"topic": "otters"}
    joined = {
        "type": "and",
        "filters": [{"type": "eq", "key": "topic", "value": "otters"}, {"type": "eq", "key": "year", "value": 2024}],
    }
    assert stores.equality_filters(joined) == {"topic": "otters", "year": 2024}


@pytest.mark.parametrize(
    "refused",
    [
        {"type": "gt", "key": "year", "value": 2020},
        {"type": "or", "filters": [{"type": "eq", "key": "a", "value": 1}]},
        {"type": "and", "filters": [{"type": "ne", "key": "a", "value": 1}]},
        {"type": "and", "filters": ["junk"]},
        {"type": "eq", "key": "a", "value": ["x", "y"]},
        {"type": "eq", "value": 1},
    ],
)
def test_other_filters_are_refused_naming_filters(refused):
    with pytest.raises(ApiError) as raised:
        stores.equality_filters(refused)
    assert raised.value.status == 400 and raised.value.param == "filters"


def test_pages_follow_the_cursor_either_way():
    ids = ["e", "d", "c", "b", "a"]
    assert stores.page(ids, ids, None, None, 2) == (["e", "d"], True)
    assert stores.page(ids, ids, "d", None, 2) == (["c", "b"], True)
    assert stores.page(ids, ids, "b", None, 2) == (["a"], False)
    assert stores.page(ids, ids, None, "b", 2) == (["d", "c"], False)
    assert stores.page(ids, ids, "unknown", None, 10) == (ids, False)


def test_chunking_strategies():
    assert stores.chunking(None) == (None, None)
    assert stores.chunking({"type": "auto"}) == (None, None)
    static = {"type": "static", "static": {"max_chunk_size_tokens": 128, "chunk_overlap_tokens": 16}}
    assert stores.chunking(static) == (128, 16)


def test_a_chunk_is_a_search_result_with_its_files_attributes():
    source = {
        "chunk_id": "doc-1:0",
        "text": "Sea otters hold hands.",
        "score": 0.71,
        "metadata": {"topic": "otters", "file_id": "file-1", "file": "otters.txt", "page": None, "document_id": "d"},
    }
    assert stores.search_result(source) == {
        "file_id": "file-1",
        "filename": "otters.txt",
        "score": 0.71,
        "attributes": {"topic": "otters"},
        "content": [{"type": "text", "text": "Sea otters hold hands."}],
    }
    ingested_by_rag = {**source, "metadata": {"file": "a.txt", "page": 2, "document_id": "doc-9"}}
    assert stores.search_result(ingested_by_rag)["file_id"] == "doc-9"


def test_the_events_after_the_last_one_seen():
    moment = datetime(2026, 12, 5, tzinfo=UTC)
    names = ("job.queued", "job.processing", "job.completed")
    job = Job(job_id="job-1", outbox=[{"event_id": f"job-1.{n}", "event": n, "at": moment, "job": {}} for n in names])
    after = job_watch.events_after
    assert [e["event"] for e in after(job, None)] == list(names)
    assert [e["event"] for e in after(job, "job-1.job.queued")] == ["job.processing", "job.completed"]
    assert after(job, "job-1.job.completed") == []
    assert len(after(job, "another-job.job.queued")) == 3  # not this job's: from the start
    assert job_watch.event_view(job.outbox[0])["timestamp"].startswith("2026-12-05T00:00:00")
