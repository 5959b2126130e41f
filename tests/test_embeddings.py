"""A user embeds text with the default embedding model through the official openai client."""

from __future__ import annotations

import math

import openai
import pytest

from tests.conftest import EMBEDDING_MODEL


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_similar_sentences_are_closer_than_unrelated_ones(client):
    result = client.embeddings.create(
        model=EMBEDDING_MODEL,
        input=["The cat sits on the mat.", "A feline rests on a rug.", "Stock markets fell sharply today."],
    )
    vectors = [item.embedding for item in sorted(result.data, key=lambda item: item.index)]
    assert [len(v) for v in vectors] == [384, 384, 384]
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert result.usage.prompt_tokens == result.usage.total_tokens > 9


def test_float_and_base64_encodings_agree(client):
    as_float = client.embeddings.create(model=EMBEDDING_MODEL, input="hello world", encoding_format="float")
    as_base64 = client.embeddings.create(model=EMBEDDING_MODEL, input="hello world")  # the client asks for base64
    assert as_float.data[0].embedding == pytest.approx(as_base64.data[0].embedding, abs=1e-6)


def test_empty_input_is_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, input=["fine", ""])
    assert caught.value.body["param"] == "input"
