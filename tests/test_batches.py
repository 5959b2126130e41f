"""The OpenAI Files and Batch APIs with the stock ``openai`` client: a batch across two models, bad lines in the
error file, cancel, and every ``custom_id`` exactly once after ``kill -9`` of the model worker, of the
control worker that runs the batch, or of the whole stack (Redis, the Mongo-wire server, every worker, the web).
A ``batch.completed`` event reaches a webhook; a batch past its completion window expires with what was done."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import openai
import psutil
import pymongo
import pytest
import redis
import requests

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, WORK_QUEUES, worker_is_live, worker_pid
from tests.holds import held_key, hold_key, holdable
from tests.stack import Stack, wait_until

FINISHED = ("completed", "failed", "cancelled", "expired")


def chat_line(custom_id: str, model: str, text: str = "Say hi", **body) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 3, **body},
    }


def jsonl(lines: list[dict]) -> bytes:
    return "\n".join(json.dumps(line) for line in lines).encode()


def run_batch(client: openai.OpenAI, lines: list[dict], request_id: str | None = None, **extra):
    uploaded = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    headers = {"X-Request-ID": request_id} if request_id else None
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=extra.pop("endpoint", "/v1/chat/completions"),
        completion_window="24h",
        extra_headers=headers,
        **extra,
    )


def wait_batch(client: openai.OpenAI, batch_id: str, statuses=FINISHED, timeout: float = 120):
    seen = {}

    def reached() -> bool:
        seen["batch"] = client.batches.retrieve(batch_id)
        return seen["batch"].status in statuses

    wait_until(reached, timeout, f"batch {batch_id} to reach {statuses}")
    return seen["batch"]


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


class Holds:
    """Holds chosen lines of a batch (by their request ids, ``<batch request id>.<line index>``)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.request_id = holdable(name)
        self.keys: list[str] = []
        self.held_keys: list[str] = []

    def hold(self, index: int) -> None:
        self.keys.append(hold_key(f"{self.request_id}.{index}"))
        self.held_keys.append(held_key(f"{self.request_id}.{index}"))
        self.client.set(self.keys[-1], "1", ex=600)

    def wait_held(self, index: int, timeout: float = 60) -> None:
        key = held_key(f"{self.request_id}.{index}")
        wait_until(lambda: self.client.exists(key), timeout, f"line {index} to be held")

    def wait_any_held(self, timeout: float = 60) -> None:
        """Returns once one of the held lines waits on its hold. Which one is the engine's business: a held line
        holds the engine, and lines may change places in the batch (one that gives way to an interactive request,
        a health probe say, joins again after the others)."""
        wait_until(lambda: self.client.exists(*self.held_keys) > 0, timeout, "a held line to be held")

    def release(self) -> None:
        if self.keys:
            self.client.delete(*self.keys)


@pytest.fixture()
def holds(redis_client):
    made: list[Holds] = []

    def make(name: str) -> Holds:
        made.append(Holds(redis_client, name))
        return made[-1]

    yield make
    for one in made:
        one.release()


def test_a_batch_across_two_models_with_bad_lines(client, jobs_url, spare_chat, receiver):
    hook = {"url": receiver.url("/batch-events"), "events": ["batch.completed"]}
    assert requests.post(f"{jobs_url}/webhooks", json=hook, timeout=10).status_code == 201
    lines = [chat_line(f"a-{i}", CHAT_MODEL if i % 2 else spare_chat, f"Say {i}") for i in range(6)]
    lines.append(chat_line("bad-role", CHAT_MODEL, messages=[{"role": "wizard", "content": "hi"}]))
    lines.append(chat_line("no-such-model", "no/such-model"))
    batch = run_batch(client, lines, metadata={"purpose": "test"})
    assert batch.status == "validating" and batch.request_counts.total == 8
    assert batch.metadata == {"purpose": "test"}

    done = wait_batch(client, batch.id)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (6, 2)
    assert done.completed_at and done.in_progress_at and done.finalizing_at

    output = file_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(f"a-{i}" for i in range(6))
    for line in output:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert line["id"].startswith("batch_req_") and body["object"] == "chat.completion"
        assert body["model"] == (CHAT_MODEL if int(line["custom_id"][2:]) % 2 else spare_chat)
        assert body["usage"]["completion_tokens"] <= 3 and body["choices"][0]["message"]["role"] == "assistant"
    assert client.files.content(done.output_file_id).text == client.files.content(done.output_file_id).text

    errors = {line["custom_id"]: line["response"] for line in file_lines(client, done.error_file_id)}
    assert set(errors) == {"bad-role", "no-such-model"}
    assert errors["bad-role"]["status_code"] == 400
    assert errors["bad-role"]["body"]["error"]["param"] == "messages[0].role"
    assert errors["no-such-model"]["status_code"] == 404

    job = requests.get(f"{jobs_url}/jobs", params={"limit": 50}, timeout=10).json()["jobs"]
    batch_jobs = [j for j in job if j["operation"] == "batch" and j["metadata"].get("batch_id") == batch.id]
    assert len(batch_jobs) == 1 and batch_jobs[0]["status"] == "completed"
    job_id = batch_jobs[0]["job_id"]
    wait_until(lambda: receiver.events("/batch-events", job_id) == ["batch.completed"], 30, "the batch.completed event")
    delivered = receiver.at("/batch-events")[0].payload
    assert delivered["job"]["status"] == "completed" and delivered["job"]["result"]["batch_id"] == batch.id
    assert batch.id in [b.id for b in client.batches.list(limit=100)]
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_responses_lines_answer_as_the_endpoint_and_are_stored_unless_told_not_to(client, control_worker):
    def line(custom_id: str, **body) -> dict:
        body = {"model": CHAT_MODEL, "input": "Say hi", "max_output_tokens": 3, **body}
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/responses", "body": body}

    batch = run_batch(client, [line("kept"), line("not-kept", store=False)], endpoint="/v1/responses")
    done = wait_batch(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 2, done
    bodies = {entry["custom_id"]: entry["response"]["body"] for entry in file_lines(client, done.output_file_id)}
    kept, not_kept = bodies["kept"], bodies["not-kept"]
    assert kept["object"] == "response" and kept["status"] in ("completed", "incomplete") and kept["output"]
    assert client.responses.retrieve(kept["id"]).output_text == kept["output"][0]["content"][0]["text"]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(not_kept["id"])
    follow_up = client.responses.create(
        model=CHAT_MODEL, input="And again?", previous_response_id=kept["id"], max_output_tokens=2
    )
    assert follow_up.status in ("completed", "incomplete")


def test_a_batch_file_is_checked_as_it_is_uploaded(client):
    good = chat_line("one", CHAT_MODEL)
    with pytest.raises(openai.BadRequestError) as bad_json:
        client.files.create(file=("in.jsonl", jsonl([good]) + b"\n{not json"), purpose="batch")
    assert "Line 2" in bad_json.value.message and bad_json.value.body["param"] == "file"
    with pytest.raises(openai.BadRequestError) as twice:
        client.files.create(file=("in.jsonl", jsonl([good, good])), purpose="batch")
    assert "Line 2" in twice.value.message and "custom_id" in twice.value.message
    with pytest.raises(openai.BadRequestError) as no_method:
        client.files.create(file=("in.jsonl", jsonl([{**good, "method": "GET"}])), purpose="batch")
    assert "Line 1" in no_method.value.message and "method" in no_method.value.message

    stored = client.files.create(file=("notes.txt", b"free text"), purpose="user_data")
    assert (stored.bytes, stored.filename, stored.purpose) == (9, "notes.txt", "user_data")
    assert client.files.retrieve(stored.id).id == stored.id
    assert client.files.content(stored.id).content == b"free text"
    assert stored.id in [f.id for f in client.files.list(purpose="user_data")]
    assert client.files.delete(stored.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")


def test_cancel_lets_the_running_lines_finish_and_writes_what_is_done(client, base_url, holds):
    stats = requests.get(f"{base_url}/v1/queue/stats", timeout=10).json()["queues"][CHAT_MODEL]
    in_flight = stats["max_concurrency"] + 2  # what the batch sends the model at most: all of it is held
    held = holds("batch-cancel")
    for index in range(in_flight):
        held.hold(index)
    lines = [chat_line(f"c-{i}", CHAT_MODEL) for i in range(in_flight + 5)]
    batch = run_batch(client, lines, held.request_id)
    held.wait_any_held()
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at
    assert client.batches.retrieve(batch.id).status == "cancelling"
    held.release()

    done = wait_batch(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at
    ids = [line["custom_id"] for line in file_lines(client, done.output_file_id)]
    assert sorted(ids) == sorted(f"c-{i}" for i in range(in_flight))
    assert done.request_counts.completed == in_flight and done.request_counts.total == in_flight + 5
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)


def test_a_batch_past_its_completion_window_expires_with_what_was_done(client, base_url, holds, stack: Stack):
    """A day is not waited for: the batch's ``expires_at`` is moved into the past in the store while its lines
    are held; the pump stops sending, the running lines finish, the rest are ``batch_expired``."""
    stats = requests.get(f"{base_url}/v1/queue/stats", timeout=10).json()["queues"][CHAT_MODEL]
    in_flight = stats["max_concurrency"] + 2
    held = holds("batch-expire")
    for index in range(in_flight):
        held.hold(index)
    batch = run_batch(client, [chat_line(f"e-{i}", CHAT_MODEL) for i in range(in_flight + 3)], held.request_id)
    held.wait_any_held()
    batches = pymongo.MongoClient(stack.env["MONGODB_URL"]).get_default_database()["batches"]
    batches.update_one({"_id": batch.id}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(minutes=1)}})
    wait_until(lambda: batches.find_one({"_id": batch.id}).get("expiring"), 30, "the pump to see the window pass")
    held.release()

    done = wait_batch(client, batch.id)
    assert done.status == "expired" and done.expired_at, done
    assert (done.request_counts.completed, done.request_counts.failed) == (in_flight, 3)
    assert sorted(line["custom_id"] for line in file_lines(client, done.output_file_id)) == sorted(
        f"e-{i}" for i in range(in_flight)
    )
    expired = file_lines(client, done.error_file_id)
    assert sorted(line["custom_id"] for line in expired) == [f"e-{i}" for i in range(in_flight, in_flight + 3)]
    assert all(line["response"] is None and line["error"]["code"] == "batch_expired" for line in expired)


def test_a_model_worker_killed_mid_batch_loses_and_doubles_no_line(client, redis_client, holds, spare_chat):
    held = holds("batch-kill-model")
    held.hold(1)
    lines = [chat_line(f"k-{i}", spare_chat, f"Say {i}") for i in range(8)]
    batch = run_batch(client, lines, held.request_id)
    held.wait_held(1)
    killed = worker_pid(redis_client, spare_chat)
    os.kill(killed, signal.SIGKILL)
    held.release()

    done = wait_batch(client, batch.id, timeout=180)
    assert done.status == "completed" and done.request_counts.completed == 8, done
    ids = [line["custom_id"] for line in file_lines(client, done.output_file_id)]
    assert sorted(ids) == sorted(f"k-{i}" for i in range(8))
    assert worker_is_live(redis_client, spare_chat) and worker_pid(redis_client, spare_chat) != killed


def test_the_control_worker_killed_mid_batch_loses_and_doubles_no_line(client, redis_client, holds, stack: Stack):
    held = holds("batch-kill-control")
    held.hold(2)
    batch = run_batch(client, [chat_line(f"w-{i}", CHAT_MODEL, f"Say {i}") for i in range(8)], held.request_id)
    held.wait_held(2)
    work = next(s for s in reversed(stack.services) if s.name.startswith("work") and s.process.poll() is None)
    os.killpg(work.process.pid, signal.SIGKILL)
    work.process.wait(timeout=10)
    stack.start_control(f"work-{int(time.time())}", queues=WORK_QUEUES)
    held.release()

    done = wait_batch(client, batch.id, timeout=180)
    assert done.status == "completed" and done.request_counts.completed == 8, done
    ids = [line["custom_id"] for line in file_lines(client, done.output_file_id)]
    assert sorted(ids) == sorted(f"w-{i}" for i in range(8))


def embedding_line(custom_id: str) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": EMBEDDING_MODEL, "input": custom_id},
    }


def test_the_whole_stack_killed_mid_batch_loses_and_doubles_no_line(small_stack: Stack):
    """A stack of its own: Redis (no persistence: a restart loses every message and every line in flight), the
    Mongo-wire server behind its restart loop, a model worker, a control worker and a web process, all killed with
    SIGKILL while a line is held; started again, the batch resumes from what MongoDB recorded."""
    small = small_stack
    redis_server = small.start_redis()
    port = int(small.env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    mongo = small.start_mongo(restarted=True)
    running = [small.start_worker(EMBEDDING_MODEL, "whole-worker"), small.start_control("whole-control")]
    web, base = small.start_web("whole-web")
    running.append(web)
    broker = redis.Redis(port=port)
    wait_until(lambda: worker_is_live(broker, EMBEDDING_MODEL), 120, "the embedding worker", running[0].process)
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)
    held = Holds(broker, "batch-whole-stack")
    held.hold(3)
    lines = [embedding_line(f"s-{i}") for i in range(8)]
    batch = run_batch(client, lines, held.request_id, endpoint="/v1/embeddings")
    held.wait_held(3)

    for service in [*running, redis_server]:
        service.stop(signal.SIGKILL)
    os.kill(psutil.Process(mongo.process.pid).children()[0].pid, signal.SIGKILL)  # its loop starts it again
    small.start_redis(port)  # empty: the hold is gone with everything else
    small.start_worker(EMBEDDING_MODEL, "whole-worker-2")
    small.start_control("whole-control-2")
    _web, base = small.start_web("whole-web-2")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=30)

    done = wait_batch(client, batch.id, timeout=180)
    assert done.status == "completed" and done.request_counts.completed == 8, done
    ids = [line["custom_id"] for line in file_lines(client, done.output_file_id)]
    assert sorted(ids) == sorted(f"s-{i}" for i in range(8))
