"""A user asks the default chat model through the official openai client, non-streaming."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer

from tests.conftest import CHAT_MODEL, ask
from tests.stack import ROOT


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(Path(ROOT / ".data/models/HuggingFaceTB--SmolLM2-135M-Instruct/tokenizer.json")))


def test_capital_of_france_is_paris(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=ask("What is the capital of France?"), temperature=0, max_tokens=20
    )
    assert "Paris" in answer.choices[0].message.content
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.object == "chat.completion"
    assert answer.model == CHAT_MODEL
    assert answer.id.startswith("chatcmpl-")


def test_usage_counts_the_prompt_and_the_generated_tokens(client, tokenizer):
    messages = ask("Write a long story about a dragon.")
    answer = client.chat.completions.create(model=CHAT_MODEL, messages=messages, temperature=0, max_tokens=6)
    usage = answer.usage
    assert answer.choices[0].finish_reason == "length"
    assert usage.completion_tokens == 6
    prompt = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWrite a long story about a dragon.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert usage.prompt_tokens == len(tokenizer.encode(prompt).ids)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert len(tokenizer.encode(answer.choices[0].message.content).ids) == 6


def test_stop_sequence_cuts_the_answer(client):
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=ask("What is the capital of France?"), temperature=0, max_tokens=20, stop=["Paris"]
    )
    content = answer.choices[0].message.content
    assert "Paris" not in content
    assert content.startswith("The capital of France is")
    assert answer.choices[0].finish_reason == "stop"


def test_same_seed_gives_the_same_sampled_answer(client):
    def sample() -> str:
        return (
            client.chat.completions.create(
                model=CHAT_MODEL, messages=ask("Name a colour."), temperature=1.0, seed=7, max_tokens=8
            )
            .choices[0]
            .message.content
        )

    assert sample() == sample()
