"""A client that goes away mid-stream stops the generation, so the model is free for the next request;
a worker that dies mid-request ends the request with a clear error instead of a hang, and comes back."""

from __future__ import annotations

import os
import re
import signal

import openai
import pytest
import requests

from tests.conftest import CHAT_MODEL, active_requests, ask, worker_is_live, worker_pid
from tests.stack import wait_until

LONG = ask("Count from 1 to 1000, one number per line.")


def test_disconnect_mid_stream_frees_the_model(base_url, client, supervisor, hold):
    held = hold("disconnect")  # never released: only the disconnect can stop this generation
    response = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": CHAT_MODEL, "messages": LONG, "max_tokens": 200, "temperature": 0, "stream": True},
        headers={"X-Request-ID": held.request_id},
        stream=True,
        timeout=60,
    )
    held.wait_held()
    lines = response.iter_lines()
    received = [next(lines) for _ in range(3)]  # the role chunk, a blank line, the first token
    assert any(b"content" in line for line in received)
    response.close()  # the client goes away

    wait_until(lambda: active_requests(base_url, CHAT_MODEL) == 0, 30, "the generation to stop")
    finished = re.compile(rf"\[request_id={re.escape(held.request_id)}\] chat finished in \d+ ms \(cancelled\)")
    wait_until(lambda: finished.search(supervisor.log()), 10, "the worker to log the cancellation of this request")
    answer = client.with_options(timeout=30).chat.completions.create(
        model=CHAT_MODEL, messages=ask("Say hi."), max_tokens=4
    )
    assert answer.choices[0].message.content


def test_worker_killed_mid_stream_ends_the_stream_then_the_supervisor_restarts_it(
    client, redis_client, hold, spare_chat
):
    model_id = spare_chat
    held = hold("killed-mid-stream")
    stream = client.with_options(timeout=60).chat.completions.create(
        model=model_id,
        messages=LONG,
        max_tokens=100,
        stream=True,
        temperature=0,
        extra_headers={"X-Request-ID": held.request_id},
    )
    chunks = iter(stream)
    next(chunks)
    held.wait_held()
    killed = worker_pid(redis_client, model_id)
    os.kill(killed, signal.SIGKILL)
    with pytest.raises(openai.APIError) as caught:
        for _ in chunks:
            pass
    assert caught.value.code == "worker_lost"
    assert "stopped during this request" in caught.value.message

    wait_until(
        lambda: worker_is_live(redis_client, model_id) and worker_pid(redis_client, model_id) != killed,
        120,
        "the supervisor to restart the worker",
    )
    answer = client.chat.completions.create(model=model_id, messages=ask("Say hi."), max_tokens=4)
    assert answer.choices[0].message.content
