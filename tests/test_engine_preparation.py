"""The engine of one worker, in this process with the real chat model (no services): requests are prepared (chat
template, tokens, a schema's grammar compiled) on the submitting thread, never on the engine thread that steps
every running stream."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from models.batch import BatchSession
from models.engine import Engine
from models.handlers import load_handler
from models.handlers.base import ServingLimits
from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR

WIDE_SCHEMA = {
    "type": "object",
    "properties": {f"field_{n}": {"type": "integer" if n % 2 else "string"} for n in range(200)},
    "required": [f"field_{n}" for n in range(200)],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    from models.prepare import main as prepare_models

    assert prepare_models([CHAT_MODEL]) == 0
    limits = ServingLimits(max_sequences=4, prompt_cache_entries=0)
    running = Engine(lambda: load_handler("lm", CHAT_MODEL_DIR, 2048, limits), warmup=False)
    running.start()
    yield running
    running.stop()


def chat(text: str, **options: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "temperature": 0, "stream": True, **options}


def test_a_wide_schema_is_compiled_off_the_engine_thread_while_a_stream_runs(engine, monkeypatch):
    preparing_threads: list[str] = []
    real_prepare = BatchSession.prepare

    def recorded(self: BatchSession, ticket: Any) -> Any:
        preparing_threads.append(threading.current_thread().name)
        return real_prepare(self, ticket)

    monkeypatch.setattr(BatchSession, "prepare", recorded)  # a spy: the real preparation runs
    alone = engine.submit("chat", chat("Count to twenty.", max_tokens=24), lambda _e: None, lambda: False).result(120)
    streamed: list[dict[str, Any]] = []
    started = threading.Event()

    def emit(event: dict[str, Any]) -> None:
        streamed.append(event)
        if event.get("type") == "delta":
            started.set()

    running = engine.submit("chat", chat("Count to twenty.", max_tokens=24), emit, lambda: False)
    assert started.wait(120)
    schema = {"type": "json_schema", "json_schema": {"name": "wide", "schema": WIDE_SCHEMA}}
    joined = engine.submit(
        "chat", chat("Fill the form.", max_tokens=16, response_format=schema), lambda _e: None, lambda: False
    )
    assert running.result(120)["content"] == alone["content"]
    form = joined.result(120)
    assert form["content"].startswith('{"field_0":'), form["content"]
    assert preparing_threads and "mlx-engine" not in preparing_threads, preparing_threads


def test_a_request_the_model_cannot_take_is_refused_before_it_reaches_the_engine(engine):
    refused = engine.submit("chat", chat("x", max_tokens=100_000), lambda _e: None, lambda: False)
    with pytest.raises(Exception) as caught:
        refused.result(10)
    assert getattr(caught.value, "code", None) == "context_length_exceeded"
    assert json.dumps(getattr(caught.value, "param", None)) == '"messages"'
