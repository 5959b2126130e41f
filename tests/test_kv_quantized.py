"""A quantised KV cache in the continuous batch (``kv_bits``), driven step by step in this process with the real chat
model (no services): rows of several lengths batched together answer as each does alone, the prompt cache and its
disk tier keep and give back quantised rows, and the cache takes the bytes the budget counts."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest
from mlx_lm.models.cache import RotatingKVCache

from models.batch import BatchSession, Ticket, _cache_bytes
from models.handlers import load_handler
from models.handlers.base import ServingLimits
from models.kv_quantized import BatchQuantizedKVCache, QuantizedRows, quantize_kv
from models.prompt_cache import PromptCache
from models.prompt_disk import DiskPromptCache
from models.speculative import kv_layers
from tests.conftest import CHAT_MODEL, CHAT_MODEL_DIR

PROMPTS = [
    "What is the capital of France?",
    "Name a colour.",
    "Write one sentence about the sea, the wind and the long grey ships that sail on it.",
    "Say hi.",
]


def session(kv_bits: int | None) -> BatchSession:
    from models.prepare import main as prepare_models

    assert prepare_models([CHAT_MODEL]) == 0
    limits = ServingLimits(
        max_sequences=8, prompt_cache_entries=0, background_rows_beside_interactive=8, kv_bits=kv_bits
    )
    return load_handler("lm", CHAT_MODEL_DIR, 2048, limits).batch


@pytest.fixture(scope="module")
def quantized() -> Iterator[BatchSession]:
    yield session(8)


@pytest.fixture(scope="module")
def full() -> Iterator[BatchSession]:
    yield session(None)


def ticket(text: str, max_tokens: int = 16) -> Ticket:
    payload = {"messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, "temperature": 0}
    return Ticket("chat", payload, lambda _e: None, lambda: False, lambda: False, Future(), "t")


def run(batch: BatchSession, *texts: str, max_tokens: int = 16) -> list[dict[str, Any]]:
    tickets = [ticket(text, max_tokens) for text in texts]
    for one in tickets:
        batch.submit(one)
    while batch.busy:
        batch.step()
    return [one.future.result() for one in tickets]


def test_the_batch_holds_quantised_rows(quantized):
    one = ticket(PROMPTS[0], max_tokens=4)
    quantized.submit(one)
    while not len(quantized._generator()._generation_batch):  # the row's prompt is computed, it decodes
        quantized.step()
    layers = kv_layers(quantized.generator._generation_batch.prompt_cache)
    assert {(type(layer), layer.bits) for layer in layers} == {(BatchQuantizedKVCache, 8)}
    while quantized.busy:
        quantized.step()
    assert "Paris" in one.future.result()["content"] + run(quantized, PROMPTS[0])[0]["content"]


def test_rows_of_several_lengths_batched_together_answer_as_each_does_alone(quantized):
    alone = [run(quantized, text)[0]["content"] for text in PROMPTS]
    together = [result["content"] for result in run(quantized, *PROMPTS)]
    assert together == alone
    joined_late = [ticket(PROMPTS[2]), ticket(PROMPTS[3])]  # two rows join a batch already decoding
    quantized.submit(joined_late[0])
    for _ in range(5):
        quantized.step()
    quantized.submit(joined_late[1])
    while quantized.busy:
        quantized.step()
    assert [t.future.result()["content"] for t in joined_late] == [alone[2], alone[3]]


def test_eight_bits_answer_as_full_precision_does_on_short_prompts(quantized, full):
    assert [r["content"] for r in run(quantized, *PROMPTS[:2])] == [r["content"] for r in run(full, *PROMPTS[:2])]


def test_a_row_holds_about_a_quarter_of_the_float32_bytes_and_the_budget_counts_them(quantized, full):
    assert full.kv_bytes_per_token == 2 * 30 * 3 * 64 * 4  # SmolLM2-135M: 30 layers, 3 KV heads of 64, float32
    assert quantized.kv_bytes_per_token == 2 * 30 * 3 * (64 + 2 * 4)  # a byte a value, a scale and a bias per 64
    cache = quantized.model.make_cache()
    keys = mx.random.normal((1, 3, 300, 64))
    for layer in cache:
        layer.update_and_fetch(keys, keys)
    assert _cache_bytes(cache) == 512 * quantized.kv_bytes_per_token  # allocated 256 tokens at a time


def test_the_prompt_cache_keeps_quantised_rows_and_gives_the_same_answer(quantized):
    question = PROMPTS[2]
    cold = run(quantized, question)[0]
    quantized.prompt_cache = PromptCache(max_entries=8, max_bytes=10**9)
    try:
        first, again = run(quantized, question)[0], run(quantized, question)[0]
    finally:
        quantized.prompt_cache = PromptCache(0, 0)
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == again["usage"]["prompt_tokens"] - 1
    assert first["content"] == again["content"] == cold["content"]


def test_the_disk_tier_saves_quantised_rows_and_they_join_a_batch_again(quantized, tmp_path: Path):
    tokens = list(range(100, 400))
    cache = quantized.model.make_cache()
    values = mx.random.normal((1, 3, len(tokens), 64))
    for layer in cache:
        layer.update_and_fetch(values, values)
    disk = DiskPromptCache(tmp_path, "model/fingerprint-kv8", min_tokens=10, max_bytes=10**9)
    assert disk.write(tokens, cache) is not None
    hit = disk.load(tokens + [7])
    assert hit is not None and all(type(layer) is QuantizedRows for layer in hit.cache)
    merged = QuantizedRows.merge([hit.cache[0], cache[0]])
    assert merged.keys_and_values()[0][0].shape[2] == len(tokens)
    assert mx.array_equal(merged.extract(0).keys[0], cache[0].keys[0][..., : len(tokens), :]).item()


def test_only_plain_caches_of_four_or_eight_bits_are_quantised(quantized):
    model = quantized.model
    with pytest.raises(ValueError, match="kv_bits"):
        quantize_kv(model, 3)
    plain = model.make_cache
    model.make_cache = lambda: [RotatingKVCache(max_size=64) for _ in model.layers]
    try:
        with pytest.raises(ValueError, match="RotatingKVCache"):
            quantize_kv(model, 8)
    finally:
        model.make_cache = plain


def test_a_prefill_step_reads_its_own_chunk_at_full_precision_and_a_decoding_step_reads_the_packed_kv():
    cache = BatchQuantizedKVCache([0, 2], bits=8)
    chunk, more = mx.random.normal((2, 3, 5, 64)), mx.random.normal((2, 3, 4, 64))
    keys, _values = cache.update_and_fetch(chunk, chunk)
    assert keys is chunk and not hasattr(cache, "bits")  # the fast attention, not the quantised one
    keys, _values = cache.update_and_fetch(more, more)  # a second chunk: the first one dequantised, then its own
    assert keys.shape == (2, 3, 9, 64) and mx.array_equal(keys[:, :, 5:], more).item()
    assert mx.allclose(keys[:, :, :5], chunk, atol=0.05).item()  # 8 bits of a standard normal
    keys, _values = cache.update_and_fetch(more[:, :, :1], more[:, :, :1])
    assert isinstance(keys, tuple) and keys[0].dtype == mx.uint32 and cache.bits == 8
