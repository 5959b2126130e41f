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


def tokenize(text: str) -> list[int]:
    from tokenizers import Tokenizer

    from tests.conftest import ROOT

    path = ROOT / ".data" / "models" / "sentence-transformers--all-MiniLM-L6-v2" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()  # the model's tokenizer.json pads to 128 ids
    return tokenizer.encode(text).ids


def test_token_ids_embed_as_their_text_does(client):
    text = client.embeddings.create(model=EMBEDDING_MODEL, input="The cat sits on the mat.", encoding_format="float")
    ids = tokenize("The cat sits on the mat.")
    one = client.embeddings.create(model=EMBEDDING_MODEL, input=ids, encoding_format="float")
    several = client.embeddings.create(model=EMBEDDING_MODEL, input=[ids, ids[:4]], encoding_format="float")
    assert one.data[0].embedding == pytest.approx(text.data[0].embedding, abs=1e-4)
    assert len(several.data) == 2 and several.data[0].embedding == pytest.approx(one.data[0].embedding, abs=1e-4)
    assert one.usage.prompt_tokens == len(ids)


def test_a_batch_answers_in_input_order(client):
    texts = ["A much longer sentence about the weather in the mountains today.", "Hi", "Cats purr."]
    batch = client.embeddings.create(model=EMBEDDING_MODEL, input=texts, encoding_format="float")
    assert [item.index for item in batch.data] == [0, 1, 2]
    for item, text in zip(batch.data, texts, strict=True):
        alone = client.embeddings.create(model=EMBEDDING_MODEL, input=text, encoding_format="float")
        assert item.embedding == pytest.approx(alone.data[0].embedding, abs=1e-4)


def test_dimensions_the_model_was_not_trained_for_are_400(client):
    same = client.embeddings.create(model=EMBEDDING_MODEL, input="hello", dimensions=384)
    assert len(same.data[0].embedding) == 384
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, input="hello", dimensions=128)
    assert caught.value.body["param"] == "dimensions" and "not trained" in caught.value.body["message"]


def test_token_ids_outside_the_vocabulary_are_400(client):
    for bad in ([10**7], [[1, 2], []]):
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model=EMBEDDING_MODEL, input=bad)
        assert caught.value.body["param"] == "input"
