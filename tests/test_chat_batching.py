"""Many users, one model, through the API: a worker batching up to 8 requests serves them together, each with its
own settings, and answers each as it would alone; n choices, logprobs and the prompt cache reach the client.

The batch is filled deterministically: one request is held between two tokens (``hold``) while the others reach
the worker, so they all join the running batch when it is released.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.conftest import CHAT_MODEL_DIR, ask, load_model, unload_model
from tests.stack import wait_until

MODEL = "test/batched-lm"
QUESTIONS = ["What is the capital of France?", "Name a colour.", "Count to five.", "Say hi."]


@pytest.fixture(scope="module")
def batched(base_url):
    loaded = load_model(base_url, str(CHAT_MODEL_DIR), MODEL, context_length=2048, max_concurrency=8)
    assert loaded.status_code == 200, loaded.text
    yield MODEL
    unload_model(base_url, MODEL, force=True)


def queue_stats(base_url: str) -> dict:
    return requests.get(f"{base_url}/v1/queue/stats", timeout=5).json()["queues"].get(MODEL, {})


def test_concurrent_requests_join_one_batch_and_get_their_answers_alone(base_url, client, batched, hold):
    def answer(question: str, **extra) -> str:
        reply = client.chat.completions.create(
            model=MODEL, messages=ask(question), max_tokens=10, temperature=0, **extra
        )
        return reply.choices[0].message.content

    alone = [answer(question) for question in QUESTIONS]
    assert queue_stats(base_url)["max_concurrency"] == 8

    held = hold("batch-filler")
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        first = pool.submit(answer, QUESTIONS[0], extra_headers={"X-Request-ID": held.request_id})
        held.wait_held()
        others = [pool.submit(answer, question) for question in QUESTIONS[1:]]
        wait_until(lambda: queue_stats(base_url)["queued_in_workers"] == 3, 60, "the others to reach the worker")
        held.release()
        together = [first.result(), *(future.result() for future in others)]
    assert together == alone
    assert queue_stats(base_url)["batch_peak"] == len(QUESTIONS)  # all four were generating in one batch


def test_n_choices_logprobs_and_streamed_choices(client, batched):
    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Name a colour."), max_tokens=6, temperature=1.0, seed=3, n=3
    )
    assert [choice.index for choice in reply.choices] == [0, 1, 2]

    greedy = client.chat.completions.create(
        model=MODEL,
        messages=ask("What is the capital of France?"),
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    tokens = greedy.choices[0].logprobs.content
    assert len(tokens) == greedy.usage.completion_tokens
    assert all(
        t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in tokens
    )
    assert "".join(t.token for t in tokens) == greedy.choices[0].message.content

    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=ask("Say hi."), max_tokens=5, temperature=1.0, seed=9, n=2, stream=True
        )
    )
    texts = {0: "", 1: ""}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    finished = [choice.index for chunk in chunks for choice in chunk.choices if choice.finish_reason]
    assert sorted(finished) == [0, 1] and all(texts.values())


def test_a_shared_long_prefix_is_computed_once(client, batched):
    rules = " ".join(f"Rule {number}: answer politely and briefly." for number in range(1, 40))
    system = {"role": "system", "content": f"You are a helpful assistant. {rules}"}
    first = client.chat.completions.create(model=MODEL, messages=[system, *ask("Say hi.")], max_tokens=3, temperature=0)
    second = client.chat.completions.create(
        model=MODEL, messages=[system, *ask("Name a fruit.")], max_tokens=3, temperature=0
    )
    assert first.usage.prompt_tokens > 300
    assert second.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 12


def test_a_value_only_the_model_can_check_is_a_400_naming_it(base_url, batched):
    response = requests.post(
        f"{base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": ask("Hi"), "logit_bias": {"9999999": 5}},
        timeout=30,
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "logit_bias"
