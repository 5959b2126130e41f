"""Per-request sampling inside a shared batch: options read from a request, a sampler with the request's own
random key, and logits processors with OpenAI's meaning of each option.

Everything here is built once per request (per output sequence for ``n`` > 1) and handed to mlx-lm's
``BatchGenerator`` as that row's sampler and processors, so rows with different settings share one batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p, greedy_sampler, make_repetition_penalty

from config.errors import ApiError

LogitsProcessor = Callable[[mx.array, mx.array], mx.array]
Sampler = Callable[[mx.array], mx.array]

DEFAULT_MAX_TOKENS = 512
MAX_TOP_LOGPROBS = 20
MAX_CHOICES = 16


@dataclass(frozen=True)
class SamplingOptions:
    """The generation settings of one request, as the worker receives them (validated again here: a job's
    input reaches the worker without the web's schema)."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    n: int = 1
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _number(payload: dict[str, Any], name: str, kind: type, low: float, high: float, default: Any) -> Any:
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not float(value).is_integer()):
        raise ApiError(400, f"'{name}' must be a number", code="invalid_value", param=name)
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low:g} and {high:g}", code="invalid_value", param=name)
    return kind(value)


def options_from(payload: dict[str, Any], vocabulary_size: int) -> SamplingOptions:
    """Reads and checks the sampling fields of a request; a value that cannot be applied is a 400 naming it."""
    bias: dict[int, float] = {}
    for key, value in (payload.get("logit_bias") or {}).items():
        try:
            token = int(key)
        except (TypeError, ValueError):
            raise ApiError(400, "logit_bias keys must be token ids", code="invalid_value", param="logit_bias") from None
        if not 0 <= token < vocabulary_size:
            raise ApiError(
                400, f"logit_bias token {token} is outside the vocabulary", code="invalid_value", param="logit_bias"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or not -100 <= value <= 100:
            raise ApiError(
                400, "logit_bias values must be between -100 and 100", code="invalid_value", param="logit_bias"
            )
        bias[token] = float(value)
    top_logprobs = _number(payload, "top_logprobs", int, 0, MAX_TOP_LOGPROBS, 0)
    logprobs = bool(payload.get("logprobs")) or top_logprobs > 0
    stop = payload.get("stop") or ()
    return SamplingOptions(
        max_tokens=_number(payload, "max_tokens", int, 1, 1 << 31, DEFAULT_MAX_TOKENS),
        temperature=_number(payload, "temperature", float, 0, 2, 1.0),
        top_p=_number(payload, "top_p", float, 0, 1, 1.0),
        top_k=_number(payload, "top_k", int, 0, vocabulary_size, 0),
        min_p=_number(payload, "min_p", float, 0, 1, 0.0),
        presence_penalty=_number(payload, "presence_penalty", float, -2, 2, 0.0),
        frequency_penalty=_number(payload, "frequency_penalty", float, -2, 2, 0.0),
        repetition_penalty=_number(payload, "repetition_penalty", float, 0.01, 10, 1.0),
        logit_bias=bias,
        seed=_number(payload, "seed", int, -(1 << 63), (1 << 64) - 1, None),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        n=_number(payload, "n", int, 1, MAX_CHOICES, 1),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
    )


class KeyedSampler:
    """Samples one row with a random key of its own, split at every token: a seeded request gives the same tokens
    whatever else shares the batch (the global random state is never touched).

    A token is the argmax of the logits plus Gumbel noise drawn with that token's key (the Gumbel-max form of
    sampling), so a speculative step can draw the noise of several tokens ahead and find the same tokens."""

    def __init__(self, options: SamplingOptions, seed: int) -> None:
        self.key = mx.random.key(seed % (1 << 64))
        self.previous_key = self.key
        self.inverse_temperature = 1.0 / options.temperature
        self.filters: list[Callable[[mx.array], mx.array]] = []
        if 0 < options.top_p < 1:
            self.filters.append(lambda x: apply_top_p(x, options.top_p))
        if options.min_p > 0:
            self.filters.append(lambda x: apply_min_p(x, options.min_p))
        if options.top_k > 0:
            self.filters.append(lambda x: apply_top_k(x, options.top_k))

    def __call__(self, logprobs: mx.array) -> mx.array:
        noise = self.noise_ahead(1, logprobs.shape[-1])
        self.take(1)
        return mx.argmax(self.logits_of(logprobs) + noise, axis=-1)

    def noise_ahead(self, count: int, vocabulary: int) -> mx.array:
        """The Gumbel noise of the next ``count`` tokens, shape ``(count, vocabulary)``, without taking it."""
        noise, key = [], self.key
        for _ in range(count):
            key, token_key = mx.random.split(key)
            noise.append(mx.random.gumbel(shape=(vocabulary,), key=token_key))
        return mx.stack(noise)

    def take(self, count: int) -> None:
        """Moves past the keys of ``count`` tokens."""
        for _ in range(count):
            self.previous_key = self.key
            self.key = mx.random.split(self.key)[0]

    def logits_of(self, logprobs: mx.array) -> mx.array:
        """The logits this sampler draws from: top-p, min-p and top-k applied, then the temperature."""
        for apply in self.filters:
            logprobs = apply(logprobs)
        return logprobs * self.inverse_temperature

    def step_back(self) -> None:
        """Forgets the last sample's key: the row's token sampled ahead was dropped and will be sampled again."""
        self.key = self.previous_key


def samplers_for(options: SamplingOptions) -> list[Sampler]:
    """One sampler per output sequence. Greedy rows share mlx-lm's greedy sampler, so a batch of them samples in
    one call; sequence ``i`` of a seeded request uses ``seed + i``."""
    if options.greedy:
        return [greedy_sampler] * options.n
    base = options.seed if options.seed is not None else int.from_bytes(os.urandom(8), "little")
    return [KeyedSampler(options, base + index) for index in range(options.n)]


def openai_penalties(prompt_length: int, presence: float, frequency: float) -> LogitsProcessor:
    """OpenAI's presence and frequency penalties: over the tokens generated so far, not the prompt."""

    def penalise(tokens: mx.array, logits: mx.array) -> mx.array:
        generated = tokens[prompt_length:]
        if generated.size == 0:
            return logits
        counts = mx.zeros((logits.shape[-1],), dtype=logits.dtype).at[generated].add(1)
        return logits - (frequency * counts + presence * (counts > 0))

    return penalise


def logit_bias_processor(bias: dict[int, float]) -> LogitsProcessor:
    indices = mx.array(list(bias))
    values = mx.array(list(bias.values()))
    return lambda _tokens, logits: logits.at[:, indices].add(values)


def processors_for(options: SamplingOptions, prompt_length: int) -> list[LogitsProcessor]:
    processors: list[LogitsProcessor] = []
    if options.logit_bias:
        processors.append(logit_bias_processor(options.logit_bias))
    if options.presence_penalty or options.frequency_penalty:
        processors.append(openai_penalties(prompt_length, options.presence_penalty, options.frequency_penalty))
    if options.repetition_penalty != 1.0:
        processors.append(make_repetition_penalty(options.repetition_penalty))
    return processors


def token_logprobs(logprobs: mx.array, token: int, top: int, decode: Callable[[int], str]) -> dict[str, Any]:
    """OpenAI's logprobs entry of one sampled token, with its ``top`` alternatives, most likely first."""
    entry: dict[str, Any] = {"token": decode(token), "logprob": logprobs[token].item(), "top_logprobs": []}
    if top:
        best = mx.argpartition(-logprobs, kth=top - 1)[:top]
        values = logprobs[best]
        order = mx.argsort(-values)
        ids, scores = best[order].tolist(), values[order].tolist()
        entry["top_logprobs"] = [{"token": decode(i), "logprob": s} for i, s in zip(ids, scores, strict=True)]
    entry["bytes"] = list(entry["token"].encode())
    return entry
