"""A client that goes away mid-stream stops the generation, so the model is free for the next request;
a worker that dies mid-request ends the request with a clear error instead of a hang."""

from __future__ import annotations

import os
import signal

import openai
import pytest
import requests

from tests.conftest import CHAT_MODEL, active_requests, ask, worker_is_live
from tests.stack import wait_until

LONG = ask("Count from 1 to 1000, one number per line.")


def test_disconnect_mid_stream_frees_the_model(base_url, client, workers):
    response = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": LONG, "max_tokens": 3000, "temperature": 0, "stream": True},
        headers={"X-Request-ID": "disconnect-test"},
        stream=True,
        timeout=60,
    )
    lines = response.iter_lines()
    received = [next(lines) for _ in range(8)]
    assert any(b"content" in line for line in received)
    response.close()  # the client goes away; 3000 tokens would take minutes at this machine's speed

    wait_until(lambda: active_requests(base_url, CHAT_MODEL) == 0, 30, "the generation to stop")
    wait_until(lambda: "(cancelled)" in workers["chat"].log(), 10, "the worker to log the cancellation")
    answer = client.with_options(timeout=30).chat.completions.create(
        model=CHAT_MODEL, messages=ask("Say hi."), max_tokens=4
    )
    assert answer.choices[0].message.content


def test_worker_killed_mid_stream_ends_the_stream_with_an_error(stack, client, redis_client):
    victim = stack.start_worker("test/victim-lm", "worker-victim")
    wait_until(lambda: worker_is_live(redis_client, "test/victim-lm"), 180, "the victim worker", victim.process)
    stream = client.with_options(timeout=60).chat.completions.create(
        model="test/victim-lm", messages=LONG, max_tokens=1500, stream=True, temperature=0
    )
    chunks = iter(stream)
    next(chunks)
    next(chunks)
    os.killpg(victim.process.pid, signal.SIGKILL)
    with pytest.raises(openai.APIError) as caught:
        for _ in chunks:
            pass
    assert "stopped during this request" in caught.value.message
    assert caught.value.code == "worker_lost"

    wait_until(lambda: not worker_is_live(redis_client, "test/victim-lm"), 20, "the dead worker to be forgotten")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="test/victim-lm", messages=ask("Hi"), max_tokens=2)
    assert caught.value.status_code == 503
