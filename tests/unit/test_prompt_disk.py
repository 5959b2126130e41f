"""The prompt cache's disk tier without a model: its keys, longest-prefix lookup, eviction and damaged files.

The caches here are mlx-lm ``KVCache`` layers filled with random K/V (a real cache class, saved and loaded with
mlx-lm's own functions); which tokens they stand for is only what the tier records.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

from models.prompt_disk import DiskPromptCache, evict, tokens_digest, weights_fingerprint

LAYERS = 2


def kv_cache(length: int, seed: int = 0) -> list[KVCache]:
    mx.random.seed(seed)
    layers = []
    for _ in range(LAYERS):
        layer = KVCache()
        layer.update_and_fetch(mx.random.normal((1, 2, length, 8)), mx.random.normal((1, 2, length, 8)))
        mx.eval(layer.state)
        layers.append(layer)
    return layers


def tier(root: Path, min_tokens: int = 8, max_bytes: int = 10**9, model: str = "m/fp") -> DiskPromptCache:
    return DiskPromptCache(root, model, min_tokens, max_bytes)


def test_a_prefix_written_by_one_tier_is_found_and_loaded_by_another_trimmed_to_the_shared_tokens(tmp_path):
    tokens = list(range(100, 140))
    written = kv_cache(len(tokens))
    tier(tmp_path).write(tokens, written)

    other = tier(tmp_path)  # another replica, or the worker after a restart: it knows only the folder
    request = [*tokens[:30], 7, 8, 9]
    hit = other.load(request)
    assert hit is not None and hit.cached_tokens == 30
    assert all(layer.offset == 30 for layer in hit.cache)
    assert mx.array_equal(hit.cache[0].state[0][..., :30, :], written[0].state[0][..., :30, :]).item()

    exact = other.load(tokens)  # the whole prompt cached: one token is still left to compute
    assert exact is not None and exact.cached_tokens == len(tokens) - 1
    assert other.load(tokens, at_least=len(tokens) - 1) is None  # memory already holds as much
    assert other.load([1, 2, 3, *tokens]) is None  # no shared prefix
    assert other.load(tokens[:8]) is None  # not above min_tokens


def test_files_are_keyed_by_model_fingerprint_and_tokens(tmp_path):
    tokens = list(range(20))
    path = tier(tmp_path, model="chat/aaaa").write(tokens, kv_cache(20))
    assert path == tmp_path / "chat" / "aaaa" / f"{tokens_digest(tokens)}.safetensors"
    assert tier(tmp_path, model="chat/bbbb").load(tokens) is None  # other weights: never used
    assert tier(tmp_path, model="other/aaaa").load(tokens) is None
    assert tokens_digest(tokens) != tokens_digest([*tokens[:-1], 99])


def test_a_longer_cache_replaces_its_prefixes_and_a_covered_one_is_not_written(tmp_path):
    disk = tier(tmp_path)
    turn_one = list(range(30))
    turn_two = [*turn_one, *range(500, 520)]
    disk.write(turn_one, kv_cache(30))
    disk.write(turn_two, kv_cache(50))
    assert [p.name for p in (tmp_path / "m" / "fp").iterdir()] == [f"{tokens_digest(turn_two)}.safetensors"]
    assert disk.write(turn_one, kv_cache(30)) is None  # the longer file already covers it
    assert len(list((tmp_path / "m" / "fp").iterdir())) == 1


def test_eviction_deletes_the_least_recently_used_files_of_every_model_until_the_folder_fits(tmp_path):
    disk = tier(tmp_path)
    paths = [disk.write([seed, *range(1000, 1030)], kv_cache(31, seed)) for seed in range(4)]
    size = paths[0].stat().st_size
    for age, path in enumerate(paths):
        os.utime(path, (1000 + age, 1000 + age))
    disk.load([0, *range(1000, 1030), 5])  # a hit makes the oldest the most recent
    other_model = tier(tmp_path, model="n/fp").write(list(range(31)), kv_cache(31))
    removed = evict(tmp_path, 3 * size)
    assert sorted(removed) == sorted([paths[1], paths[2]])
    assert paths[0].exists() and paths[3].exists() and other_model.exists()


def test_writing_keeps_the_folder_under_its_limit(tmp_path):
    one = tier(tmp_path).write(list(range(30)), kv_cache(30))
    disk = tier(tmp_path, max_bytes=int(one.stat().st_size * 2.5))
    for seed in range(1, 5):
        disk.write([seed * 1000, *range(30)], kv_cache(31, seed))
    files = list(tmp_path.glob("*/*/*.safetensors"))
    assert len(files) == 2 and sum(f.stat().st_size for f in files) <= disk.max_bytes


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_file_is_removed_and_never_raises(tmp_path, damage):
    tokens = list(range(40))
    path = tier(tmp_path).write(tokens, kv_cache(40))
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[: len(raw) // 2], "garbage": b"\x10" * 300, "empty": b""}[damage])
    assert tier(tmp_path).load(tokens) is None
    assert not path.exists()


def test_a_temporary_file_is_never_read_and_a_stale_one_is_cleaned(tmp_path):
    disk = tier(tmp_path)
    path = disk.write(list(range(40)), kv_cache(40))
    partial = path.with_name(".tmp-1-abc.safetensors")
    partial.write_bytes(path.read_bytes()[:100])
    assert disk.load(list(range(40))) is not None  # the finished file serves; the partial one is not looked at
    os.utime(partial, (0, 0))
    assert partial in evict(tmp_path, 10**12)


def test_puts_never_block_and_are_dropped_when_the_writer_is_behind(tmp_path):
    disk = tier(tmp_path)
    release = threading.Event()
    real_write = disk.write
    disk.write = lambda tokens, cache: (release.wait(10), real_write(tokens, cache))[1]
    accepted = [disk.put([seed, *range(30)], kv_cache(31, seed)) for seed in range(6)]
    assert not all(accepted) and disk.dropped == accepted.count(False)
    assert disk.put(list(range(4)), kv_cache(4)) is False  # too short for the disk tier
    release.set()
    disk.flush()
    assert len(list(tmp_path.glob("*/*/*.safetensors"))) == accepted.count(True)


def test_the_fingerprint_follows_the_weights_content_and_is_remembered(tmp_path):
    model, memo = tmp_path / "model", tmp_path / "memo"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"x" * 10)
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    first = weights_fingerprint(model, memo)
    assert len(list(memo.iterdir())) == 1 and weights_fingerprint(model, memo) == first
    (model / "tokenizer.json").write_text('{"other": 1}')  # the tokenizer does not change a token's K/V
    (model / "model.safetensors").write_bytes(b"x" * 10)  # written again, unchanged: a new time, the same digest
    os.utime(model / "model.safetensors", (1, 1))
    assert weights_fingerprint(model, memo) == first
    (model / "model.safetensors").write_bytes(b"y" * 10)
    assert weights_fingerprint(model, memo) != first


def test_token_ids_round_trip_through_the_header(tmp_path):
    from models.prompt_disk import read_tokens

    tokens = [0, 1, 49151, 2**20]
    path = tier(tmp_path, min_tokens=2).write(tokens, kv_cache(4))
    assert np.array_equal(read_tokens(path), tokens)
