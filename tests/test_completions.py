"""``POST /v1/completions`` with the official ``openai`` client against the running stack."""

from __future__ import annotations

import requests

from tests.conftest import CHAT_MODEL

PROMPT = "The capital of France is"


def test_a_text_completion(client):
    answer = client.completions.create(model=CHAT_MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert answer.object == "text_completion" and answer.id.startswith("cmpl-")
    [choice] = answer.choices
    assert choice.text and choice.index == 0 and choice.finish_reason in ("stop", "length")
    assert answer.usage.completion_tokens <= 6 and answer.usage.prompt_tokens > 0


def test_the_default_budget_is_sixteen_tokens(client):
    answer = client.completions.create(model=CHAT_MODEL, prompt="Once upon a time", temperature=0)
    assert answer.usage.completion_tokens <= 16


def test_list_prompts_and_n_give_one_choice_each_in_order(client):
    prompts = [PROMPT, "One, two, three,"]
    alone = [client.completions.create(model=CHAT_MODEL, prompt=p, max_tokens=5, temperature=0) for p in prompts]
    answer = client.completions.create(model=CHAT_MODEL, prompt=prompts, max_tokens=5, temperature=0, n=2)
    assert [choice.index for choice in answer.choices] == [0, 1, 2, 3]
    texts = [choice.text for choice in answer.choices]
    assert texts == [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    assert answer.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)  # a prompt counts once, whatever n


def test_echo_logprobs_stop_and_seed(client):
    echoed = client.completions.create(model=CHAT_MODEL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    plain = client.completions.create(model=CHAT_MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text

    scored = client.completions.create(model=CHAT_MODEL, prompt=PROMPT, max_tokens=4, temperature=0, logprobs=3)
    logprobs = scored.choices[0].logprobs
    assert "".join(logprobs.tokens) == scored.choices[0].text
    assert len(logprobs.token_logprobs) == len(logprobs.tokens) == len(logprobs.text_offset)
    assert all(len(top) == 3 for top in logprobs.top_logprobs)
    for token, logprob, top in zip(logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True):
        assert max(top.values()) == logprob and top[token] == logprob  # greedy: the best token was chosen
    assert logprobs.text_offset[0] == 0

    stopped = client.completions.create(model=CHAT_MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stop=["."])
    assert "." not in stopped.choices[0].text and stopped.choices[0].finish_reason == "stop"

    seeded = [
        client.completions.create(model=CHAT_MODEL, prompt="Tell me", max_tokens=8, temperature=1.0, seed=11)
        .choices[0]
        .text
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]


def test_streaming_equals_the_whole_answer(client):
    whole = client.completions.create(model=CHAT_MODEL, prompt=[PROMPT, "Blue is a"], max_tokens=6, temperature=0)
    stream = client.completions.create(
        model=CHAT_MODEL,
        prompt=[PROMPT, "Blue is a"],
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    usage = None
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
        usage = chunk.usage or usage
    assert texts == {c.index: c.text for c in whole.choices}
    assert finishes == {c.index: c.finish_reason for c in whole.choices}
    assert usage.completion_tokens == whole.usage.completion_tokens


def test_unsupported_options_are_refused_naming_them(base_url):
    cases = [
        ({"suffix": "end"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"echo": True, "logprobs": 1}, "echo"),
        ({"logprobs": 9}, "logprobs"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "x" * 40000, "max_tokens": 8}, "prompt"),
    ]
    for extra, param in cases:
        body = {"model": CHAT_MODEL, "prompt": PROMPT, **extra}
        response = requests.post(f"{base_url}/v1/completions", json=body, timeout=60)
        assert response.status_code == 400, (extra, response.text)
        assert response.json()["error"]["param"] == param, (extra, response.text)
    streamed = requests.post(
        f"{base_url}/v1/completions",
        json={"model": CHAT_MODEL, "prompt": "x " * 9000, "stream": True},
        timeout=60,
    )
    assert streamed.status_code == 400 and streamed.json()["error"]["code"] == "context_length_exceeded"
