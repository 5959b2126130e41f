"""RAG end to end: real documents (Debian's bash and Python manuals) ingested through the API into the embedded
LanceDB store by the real embedding model, questions answered by the real chat model."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from tests.conftest import BASH_PDF, CHAT_MODEL, EMBEDDING_MODEL, PYTHON_HTML, submit_job, wait_for_job
from tests.holds import held_key, hold_key, holdable
from tests.stack import wait_until

SHORT = {"max_tokens": 8, "temperature": 0}
FIRST = b"Granite is a coarse-grained igneous rock. " * 12
SECOND = b"Basalt is a fine-grained volcanic rock. " * 12
ULIMIT_QUESTION = "Which builtin controls the resources available to the shell, such as the maximum size of core files?"


def ingest(rag_url: str, collection: str, files: list[tuple[str, bytes]], **form) -> requests.Response:
    data = {"collection": collection, **{k: json.dumps(v) if isinstance(v, dict) else v for k, v in form.items()}}
    return requests.post(f"{rag_url}/ingest", data=data, files=[("files", f) for f in files], timeout=300)


def query(rag_url: str, text: str, collection: str, **body) -> requests.Response:
    payload = {"query": text, "collection": collection, "generation_config": SHORT, **body}
    return requests.post(f"{rag_url}/query", json=payload, timeout=120)


def error_of(response: requests.Response) -> dict:
    return response.json()["error"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_a_pdf_is_ingested_in_chunks_the_embedding_model_reads_whole(bash_manual):
    assert bash_manual["status"] == "completed"
    assert bash_manual["documents_ingested"] == 1 and len(bash_manual["document_ids"]) == 1
    assert bash_manual["embedding_model"] == EMBEDDING_MODEL
    # all-MiniLM-L6-v2 reads 256 tokens; with [CLS] and [SEP] a chunk may have 254 (the spec's 512 would be cut).
    assert bash_manual["chunk_size"] == 254 and bash_manual["overlap"] == 63
    assert bash_manual["chunks_created"] > 150
    assert bash_manual["embedding_time_ms"] > 0


def test_a_question_answered_on_one_page_retrieves_that_page_first_and_cites_it(rag_url, bash_manual):
    response = query(rag_url, ULIMIT_QUESTION, bash_manual["collection"], similarity_threshold=0.2, model_id=CHAT_MODEL)
    assert response.status_code == 200, response.text
    body = response.json()
    first = body["sources"][0]
    assert first["metadata"]["page"] == 82 and "the soft limit of the resource" in first["text"]
    assert any("ulimit" in source["text"] for source in body["sources"])
    assert first["metadata"]["page"] == 82 and first["metadata"]["file"] == "bash.pdf"
    assert first["metadata"]["document_id"] == bash_manual["document_ids"][0]
    assert first["metadata"]["source"] == "debian"
    assert first["chunk_id"].startswith(bash_manual["document_ids"][0])
    assert body["answer"] and body["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= SHORT["max_tokens"]
    assert body["total_latency_ms"] >= body["retrieval_latency_ms"] > 0 and body["generation_latency_ms"] > 0
    assert body["metadata"] == {
        "collection": bash_manual["collection"],
        "top_k": 5,
        "model_id": CHAT_MODEL,
        "embedding_model": EMBEDDING_MODEL,
        "retrieval_mode": "vector",
        "rerank": False,
        "rerank_model": None,
        "similarity_threshold": 0.2,
    }


def test_the_answer_is_generated_from_the_retrieved_sources(rag_url):
    """A made-up fact no model knows: greedy decoding can name the town only from the retrieved source."""
    collection = unique("facts")
    fact = b"The Zorblat festival is held every year in the town of Quillmere on the ninth of March.\n"
    assert ingest(rag_url, collection, [("festival.txt", fact)]).status_code == 200
    body = query(
        rag_url,
        "In which town is the Zorblat festival held?",
        collection,
        similarity_threshold=0.2,
        generation_config={"max_tokens": 30, "temperature": 0},
    ).json()
    assert "Quillmere" in body["sources"][0]["text"]
    assert "Quillmere" in body["answer"]


def test_threshold_keeps_only_chunks_at_least_that_similar(rag_url, bash_manual):
    loose = query(rag_url, ULIMIT_QUESTION, bash_manual["collection"], similarity_threshold=0.1, top_k=6).json()
    scores = [source["score"] for source in loose["sources"]]
    assert len(scores) == 6 and scores == sorted(scores, reverse=True) and min(scores) >= 0.1
    cut = (scores[2] + scores[3]) / 2
    strict = query(rag_url, ULIMIT_QUESTION, bash_manual["collection"], similarity_threshold=cut, top_k=6).json()
    assert [source["chunk_id"] for source in strict["sources"]] == [s["chunk_id"] for s in loose["sources"][:3]]
    none = query(rag_url, ULIMIT_QUESTION, bash_manual["collection"], similarity_threshold=0.99).json()
    assert none["sources"] == [] and none["answer"]


def test_sources_are_left_out_when_not_wanted(rag_url, bash_manual):
    body = query(rag_url, ULIMIT_QUESTION, bash_manual["collection"], include_sources=False).json()
    assert "sources" not in body and body["answer"]


def test_hybrid_retrieval_finds_a_rare_literal_name(rag_url, bash_manual):
    body = query(
        rag_url, "PROMPT_DIRTRIM", bash_manual["collection"], retrieval_mode="hybrid", similarity_threshold=-1
    ).json()
    assert "PROMPT_DIRTRIM" in body["sources"][0]["text"]
    assert body["metadata"]["retrieval_mode"] == "hybrid"


def test_metadata_filters_restrict_the_sources(rag_url, bash_manual):
    collection = bash_manual["collection"]
    kept = query(rag_url, ULIMIT_QUESTION, collection, similarity_threshold=0.1, filters={"source": "debian"})
    assert len(kept.json()["sources"]) == 5
    other = query(rag_url, ULIMIT_QUESTION, collection, similarity_threshold=0.1, filters={"source": "elsewhere"})
    assert other.json()["sources"] == []


def test_the_answer_streams_after_its_sources(rag_url, bash_manual):
    response = requests.post(
        f"{rag_url}/query",
        json={
            "query": ULIMIT_QUESTION,
            "collection": bash_manual["collection"],
            "similarity_threshold": 0.2,
            "stream": True,
            "generation_config": {"max_tokens": 12, "temperature": 0},
        },
        stream=True,
        timeout=120,
    )
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    lines = [line for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
    assert events[0]["object"] == "rag.sources" and events[0]["sources"][0]["metadata"]["page"] == 82
    deltas = [event["delta"] for event in events if event["object"] == "rag.delta"]
    done = events[-1]
    assert done["object"] == "rag.done" and len(deltas) >= 2
    assert "".join(deltas) == done["answer"] and done["usage"]["completion_tokens"] <= 12
    assert done["total_latency_ms"] >= done["generation_latency_ms"] > 0


def test_reingesting_the_same_file_adds_nothing(rag_url, bash_manual):
    collection = bash_manual["collection"]
    again = ingest(rag_url, collection, [("bash-again.pdf", BASH_PDF.read_bytes())])
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["documents_ingested"] == 0 and body["chunks_created"] == 0
    assert body["duplicates"] == bash_manual["document_ids"] == body["document_ids"]
    info = requests.get(f"{rag_url}/collections/{collection}", timeout=10).json()
    assert info["document_count"] == 1 and info["chunk_count"] == bash_manual["chunks_created"]


def test_collections_are_listed_and_described(rag_url, bash_manual):
    collection = bash_manual["collection"]
    listed = requests.get(f"{rag_url}/collections", timeout=10).json()["collections"]
    entry = next(c for c in listed if c["name"] == collection)
    assert entry["document_count"] == 1 and entry["chunk_count"] == bash_manual["chunks_created"]
    assert entry["created_at"].endswith("Z") and entry["metadata"] == {"source": "debian"}
    info = requests.get(f"{rag_url}/collections/{collection}", timeout=10).json()
    assert info["embedding_model"] == EMBEDDING_MODEL and info["chunk_size"] == 254 and info["overlap"] == 63
    [document] = info["documents"]
    assert document["document_id"] == bash_manual["document_ids"][0] and document["filename"] == "bash.pdf"
    assert document["chunk_count"] == bash_manual["chunks_created"] and document["ingested_at"].endswith("Z")
    missing = requests.get(f"{rag_url}/collections/no-such-collection", timeout=10)
    assert missing.status_code == 404 and error_of(missing)["code"] == "collection_not_found"
    assert error_of(missing)["type"] == "not_found_error"


def test_html_navigation_is_not_indexed(rag_url):
    """A short page of the manual (four chunks): every chunk goes into the answer's prompt, and the navigation is
    the same on every page."""
    collection = unique("pydoc")
    page = (PYTHON_HTML / "library" / "keyword.html").read_bytes()
    assert b"Previous topic" in page and b"Show Source" in page
    response = ingest(rag_url, collection, [("keyword.html", page)], chunk_size=64, overlap=0)
    assert response.status_code == 200, response.text
    chunks = response.json()["chunks_created"]
    body = query(
        rag_url,
        "Previous topic Next topic This Page Report a Bug Show Source",
        collection,
        retrieval_mode="hybrid",
        similarity_threshold=-1,
        top_k=chunks,
        include_sources=True,
    ).json()
    texts = [source["text"] for source in body["sources"]]
    assert len(texts) == chunks and any("determine if a string is a keyword" in text for text in texts)
    for marker in ("Previous topic", "Next topic", "Report a Bug", "Show Source"):
        assert not any(marker in text for text in texts), marker


def test_deleting_a_document_removes_its_chunks_from_search(rag_url):
    collection = unique("notes")
    first = b"# Tea\n\nGreen tea is steeped at about 80 degrees Celsius for two minutes.\n"
    second = b"Basalt is a dark volcanic rock that forms when lava cools quickly.\n"
    response = ingest(rag_url, collection, [("tea.md", first), ("rocks.txt", second)])
    assert response.status_code == 200, response.text
    tea, rocks = response.json()["document_ids"]
    found = query(rag_url, "At what temperature is green tea steeped?", collection, similarity_threshold=0.0).json()
    assert found["sources"][0]["metadata"]["document_id"] == tea

    deleted = requests.delete(f"{rag_url}/documents/{collection}/{tea}", timeout=30)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() | {"request_id": None} == {
        "collection": collection,
        "document_id": tea,
        "chunks_deleted": 1,
        "status": "deleted",
        "request_id": None,
    }
    after = query(rag_url, "At what temperature is green tea steeped?", collection, similarity_threshold=-1).json()
    assert [source["metadata"]["document_id"] for source in after["sources"]] == [rocks]
    info = requests.get(f"{rag_url}/collections/{collection}", timeout=10).json()
    assert [d["document_id"] for d in info["documents"]] == [rocks] and info["chunk_count"] == 1
    again = requests.delete(f"{rag_url}/documents/{collection}/{tea}", timeout=30)
    assert again.status_code == 404 and error_of(again)["code"] == "document_not_found"

    dropped = requests.delete(f"{rag_url}/collections/{collection}", timeout=30)
    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["documents_deleted"] == 1 and dropped.json()["chunks_deleted"] == 1
    assert requests.get(f"{rag_url}/collections/{collection}", timeout=10).status_code == 404
    gone = query(rag_url, "basalt", collection)
    assert gone.status_code == 404 and error_of(gone)["code"] == "collection_not_found"
    assert requests.delete(f"{rag_url}/collections/{collection}", timeout=30).status_code == 404


@pytest.mark.parametrize(
    ("files", "form", "status", "param", "says"),
    [
        ([("notes.docx", b"PK\x03\x04 not a document we read")], {}, 400, "files", "notes.docx"),
        ([("empty.txt", b"")], {}, 400, "files", "empty.txt"),
        ([("fake.pdf", b"hello, not a pdf")], {}, 400, "files", "fake.pdf"),
        ([("big.txt", b"word " * 420_000)], {}, 413, "files", "big.txt"),
        ([("ok.txt", b"fine text")], {"chunk_size": 512}, 400, "chunk_size", "254"),
        ([("ok.txt", b"fine text")], {"chunk_size": 100, "overlap": 100}, 400, "overlap", "less than"),
        ([("ok.txt", b"fine text")], {"metadata": "{not json"}, 400, "metadata", "JSON"),
        ([("ok.txt", b"fine text")], {"embedding_model": "no-such-model"}, 404, "embedding_model", "no-such-model"),
        ([("ok.txt", b"fine text")], {"embedding_model": CHAT_MODEL}, 400, "embedding_model", "embed"),
        ([("ok.txt", b"fine text")], {"collection": "bad name!"}, 400, "collection", "letters"),
        ([], {}, 400, "files", "at least one file"),
    ],
)
def test_bad_ingests_are_refused_naming_the_file_or_field_and_leave_nothing(rag_url, files, form, status, param, says):
    collection = form.pop("collection", unique("refused"))
    response = requests.post(
        f"{rag_url}/ingest",
        data={"collection": collection, **form},
        files=[("files", f) for f in files] or None,
        timeout=120,
    )
    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["param"] == param and says in error["message"]
    assert requests.get(f"{rag_url}/collections/{collection}", timeout=10).status_code in (404, 405)


def test_a_failed_file_undoes_the_files_ingested_before_it(rag_url):
    collection = unique("atomic")
    response = ingest(rag_url, collection, [("good.txt", b"Granite is an igneous rock."), ("bad.exe", b"MZ\x90")])
    assert response.status_code == 400 and "bad.exe" in error_of(response)["message"]
    assert requests.get(f"{rag_url}/collections/{collection}", timeout=10).status_code == 404
    listed = requests.get(f"{rag_url}/collections", timeout=10).json()["collections"]
    assert collection not in {c["name"] for c in listed}


def test_queries_are_validated(rag_url, bash_manual):
    collection = bash_manual["collection"]
    cases = [
        ({"query": ""}, "query"),
        ({"query": "x", "top_k": 0}, "top_k"),
        ({"query": "x", "similarity_threshold": 2}, "similarity_threshold"),
        ({"query": "x", "retrieval_mode": "psychic"}, "retrieval_mode"),
        ({"query": "x", "filters": {"tags": ["a"]}}, "filters"),
        ({"query": "x", "generation_config": {"n": 2}}, "generation_config.n"),
        ({"query": "x", "generation_config": {"temperature": 9}}, "generation_config.temperature"),
        ({"query": "x", "generation_config": {"colour": "blue"}}, "generation_config.colour"),
        ({"query": "x", "model_id": "no-such-model"}, "model_id"),
        ({"query": "x", "model_id": EMBEDDING_MODEL}, "model_id"),
        ({"query": "x", "embedding_model": CHAT_MODEL}, "embedding_model"),
        ({"query": "x", "rerank_model": CHAT_MODEL}, "rerank_model"),
        ({"query": "x", "rerank_candidates": 10}, "rerank_candidates"),
        ({"query": "x", "rerank": True, "rerank_candidates": 0}, "rerank_candidates"),
        ({"query": "x", "rerank": True, "rerank_model": EMBEDDING_MODEL}, "rerank_model"),
        ({"query": "x", "rerank": True, "rerank_model": "no-such-model"}, "rerank_model"),
    ]
    for body, param in cases:
        response = requests.post(f"{rag_url}/query", json={"collection": collection, **body}, timeout=60)
        assert 400 <= response.status_code < 500, (body, response.text)
        assert error_of(response)["param"] == param, (body, response.text)


def test_an_ingest_runs_as_a_job_that_reports_progress_per_file_and_chunk(rag_url, jobs_url, redis_client):
    collection = unique("job")
    request_id = holdable("ingest-job")
    redis_client.set(hold_key(f"{request_id}.file2"), "1", ex=600)
    try:
        accepted = requests.post(
            f"{rag_url}/ingest",
            data={"collection": collection, "async": "true", "chunk_size": 32, "overlap": 0},
            files=[("files", ("first.txt", FIRST)), ("files", ("second.txt", SECOND))],
            headers={"X-Request-ID": request_id},
            timeout=30,
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        assert accepted.json()["status"] == "queued" and accepted.json()["collection"] == collection
        wait_until(lambda: redis_client.exists(held_key(f"{request_id}.file2")), 60, "the second file to be held")
        running = requests.get(f"{jobs_url}/jobs/{job_id}", timeout=10).json()
        assert running["status"] == "processing" and running["operation"] == "rag_ingest"
        assert running["model_id"] == EMBEDDING_MODEL and running["progress"] == 0.5
        detail = running["progress_detail"]
        assert detail["file"] == "first.txt" and detail["file_number"] == 1 and detail["files"] == 2
        assert detail["chunks_embedded"] == detail["chunks"] >= 2
        assert requests.get(f"{rag_url}/collections/{collection}", timeout=10).json()["document_count"] == 0
    finally:
        redis_client.delete(hold_key(f"{request_id}.file2"))
    job = wait_for_job(jobs_url, job_id)
    assert job["status"] == "completed", job
    assert job["result"]["documents_ingested"] == 2 and job["result"]["chunks_created"] >= 4
    info = requests.get(f"{rag_url}/collections/{collection}", timeout=10).json()
    assert sorted(d["filename"] for d in info["documents"]) == ["first.txt", "second.txt"]


def test_a_cancelled_ingest_job_leaves_nothing(rag_url, jobs_url, redis_client):
    collection = unique("cancelled")
    request_id = holdable("cancel-job")
    redis_client.set(hold_key(f"{request_id}.file2"), "1", ex=600)
    try:
        accepted = requests.post(
            f"{rag_url}/ingest",
            data={"collection": collection, "async": "true"},
            files=[("files", ("first.txt", FIRST)), ("files", ("second.txt", SECOND))],
            headers={"X-Request-ID": request_id},
            timeout=30,
        )
        job_id = accepted.json()["job_id"]
        wait_until(lambda: redis_client.exists(held_key(f"{request_id}.file2")), 60, "the second file to be held")
        assert requests.delete(f"{jobs_url}/jobs/{job_id}", timeout=10).json()["status"] == "cancelled"
    finally:
        redis_client.delete(hold_key(f"{request_id}.file2"))
    wait_until(
        lambda: requests.get(f"{rag_url}/collections/{collection}", timeout=10).status_code == 404,
        60,
        "the cancelled ingest to be undone",
    )
    assert requests.get(f"{jobs_url}/jobs/{job_id}", timeout=10).json()["status"] == "cancelled"


def test_a_rag_query_runs_as_a_job(jobs_url, bash_manual):
    job_input = {
        "query": ULIMIT_QUESTION,
        "collection": bash_manual["collection"],
        "similarity_threshold": 0.2,
        "top_k": 2,
        "generation_config": SHORT,
    }
    accepted = submit_job(jobs_url, CHAT_MODEL, "rag_query", job_input)
    assert accepted.status_code == 202, accepted.text
    job = wait_for_job(jobs_url, accepted.json()["job_id"])
    assert job["status"] == "completed", job
    result = job["result"]
    assert result["sources"][0]["metadata"]["page"] == 82 and len(result["sources"]) == 2
    assert result["answer"] and result["metadata"]["model_id"] == CHAT_MODEL
    assert result["usage"]["completion_tokens"] <= SHORT["max_tokens"]

    bad = submit_job(jobs_url, CHAT_MODEL, "rag_query", {"collection": bash_manual["collection"]})
    assert bad.status_code == 400 and error_of(bad)["param"] == "input.query"
    wrong_model = submit_job(jobs_url, EMBEDDING_MODEL, "rag_query", job_input)
    assert wrong_model.status_code == 400 and error_of(wrong_model)["param"] == "operation"
    files = submit_job(jobs_url, EMBEDDING_MODEL, "rag_ingest", {"collection": "x"})
    assert files.status_code == 400 and "POST /api/rag/ingest" in error_of(files)["message"]
