"""Shortening embeddings (``dimensions``): truncate and renormalise, only to sizes the model was trained for."""

from __future__ import annotations

import numpy as np
import pytest

from config.errors import ApiError
from models.handlers.embeddings import EmbeddingsHandler, shorten


class _Config:
    hidden_size = 8
    vocab_size = 100


class _Model:
    config = _Config()


def handler(matryoshka: tuple[int, ...]) -> EmbeddingsHandler:
    """Only the dimension rules are exercised: no forward pass runs, so the model is its config alone."""
    return EmbeddingsHandler(_Model(), tokenizer=None, context_length=16, matryoshka=matryoshka)


def test_shorten_keeps_the_first_components_at_unit_length():
    vectors = np.array([[3.0, 4.0, 12.0], [1.0, 0.0, 0.0]], dtype=np.float32)
    short = shorten(vectors, 2)
    assert short.shape == (2, 2)
    assert np.allclose(short[0], [0.6, 0.8]) and np.allclose(np.linalg.norm(short, axis=1), 1.0)


def test_only_trained_sizes_are_allowed():
    trained = handler((4, 2))
    assert trained._dimensions({"dimensions": 4}, 8) == 4
    assert trained._dimensions({"dimensions": 8}, 8) is None
    assert trained._dimensions({}, 8) is None
    with pytest.raises(ApiError) as caught:
        trained._dimensions({"dimensions": 3}, 8)
    assert caught.value.param == "dimensions" and "[2, 4]" in caught.value.message
    with pytest.raises(ApiError):
        handler(())._dimensions({"dimensions": 4}, 8)
