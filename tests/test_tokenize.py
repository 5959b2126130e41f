"""A user counts and reads a language model's tokens with ``/tokenize`` and ``/detokenize`` (vLLM's shapes)."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL

QUESTION = [{"role": "user", "content": "Name a colour."}]


def post(base_url: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{base_url}{path}", json=body, timeout=60)


def test_the_count_is_the_prompt_tokens_of_the_same_chat(base_url, client):
    tokenized = post(base_url, "/tokenize", {"model": CHAT_MODEL, "messages": QUESTION}).json()
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=QUESTION, max_tokens=1, temperature=0)
    assert tokenized["count"] == len(tokenized["tokens"]) == answer.usage.prompt_tokens > 0
    assert tokenized["max_model_len"] == 8192  # the catalog's context length for SmolLM2
    bare = post(base_url, "/tokenize", {"model": CHAT_MODEL, "messages": QUESTION, "add_generation_prompt": False})
    assert tokenized["tokens"][: bare.json()["count"]] == bare.json()["tokens"]
    assert bare.json()["count"] < tokenized["count"]


def test_a_prompt_round_trips_and_counts_as_a_completion_does(base_url, client):
    text = "The capital of France is"
    tokenized = post(base_url, "/tokenize", {"model": CHAT_MODEL, "prompt": text, "return_token_strs": True}).json()
    assert len(tokenized["token_strs"]) == tokenized["count"]
    completion = client.completions.create(model=CHAT_MODEL, prompt=text, max_tokens=1, temperature=0)
    assert tokenized["count"] == completion.usage.prompt_tokens
    detokenized = post(base_url, "/detokenize", {"model": CHAT_MODEL, "tokens": tokenized["tokens"]})
    assert detokenized.status_code == 200 and detokenized.json() == {"prompt": text}


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/tokenize", {"model": "no/such-model", "prompt": "x"}, 404, "model"),
        ("/detokenize", {"model": "no/such-model", "tokens": [1]}, 404, "model"),
        ("/tokenize", {"model": CHAT_MODEL}, 400, "prompt"),
        ("/tokenize", {"model": CHAT_MODEL, "prompt": "x", "messages": QUESTION}, 400, "prompt"),
        (
            "/tokenize",
            {"model": CHAT_MODEL, "messages": QUESTION, "add_special_tokens": True},
            400,
            "add_special_tokens",
        ),
        ("/tokenize", {"model": EMBEDDING_MODEL, "prompt": "x"}, 400, "model"),
        ("/detokenize", {"model": CHAT_MODEL, "tokens": [1, 10**7]}, 400, "tokens"),
        ("/detokenize", {"model": CHAT_MODEL, "tokens": [-1]}, 400, "tokens[0]"),
        ("/detokenize", {"model": CHAT_MODEL, "tokens": "1 2"}, 400, "tokens"),
    ],
)
def test_unknown_models_and_bad_input_are_named(base_url, path, body, status, param):
    answer = post(base_url, path, body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param
