"""Constrained decoding with llguidance: a grammar per request, a matcher per output sequence, and the matcher's
token mask applied to the logits by a logits processor.

On the CPU the mask is filled with llguidance's numpy path and applied with ``mx.where`` (its MLX kernel needs
Metal). The processor advances its matcher by the tokens generated since its last call, so each sequence's
matcher follows exactly what was sampled; a sequence the grammar has finished may only end.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance
import llguidance.hf
import mlx.core as mx
import numpy as np
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""Compact JSON: with flexible whitespace a small model may emit blank lines until it runs out of tokens."""
ANY_OBJECT: dict[str, Any] = {"type": "object"}


class GrammarError(ValueError):
    """A grammar (or JSON schema) llguidance cannot compile; the message says why."""


def json_schema_grammar(schema: dict[str, Any]) -> str:
    try:
        return llguidance.LLMatcher.grammar_from_json_schema(json.dumps(schema), defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise GrammarError(str(exc)) from None


def grammar_for(payload: dict[str, Any]) -> str | None:
    """The grammar a request's ``response_format`` asks for (None for free text); ``GrammarError`` when the JSON
    schema cannot be compiled."""
    response_format = payload.get("response_format") or {}
    kind = response_format.get("type", "text")
    if kind == "json_object":
        return json_schema_grammar(ANY_OBJECT)
    if kind == "json_schema":
        return json_schema_grammar(response_format["json_schema"].get("schema") or ANY_OBJECT)
    return None


class Grammars:
    """Compiles grammars for one tokenizer and makes the logits processors that enforce them."""

    def __init__(self, tokenizer: Any, vocabulary_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocabulary_size = vocabulary_size
        self._lltokenizer: llguidance.LLTokenizer | None = None

    @property
    def lltokenizer(self) -> llguidance.LLTokenizer:
        """Built on first use (about a third of a second for a 49k vocabulary)."""
        if self._lltokenizer is None:
            hf_tokenizer = getattr(self.tokenizer, "_tokenizer", self.tokenizer)
            self._lltokenizer = llguidance.hf.from_tokenizer(
                hf_tokenizer, n_vocab=self.vocabulary_size, eos_token=list(self.tokenizer.eos_token_ids)
            )
        return self._lltokenizer

    def check(self, grammar: str) -> None:
        """``GrammarError`` unless ``grammar`` compiles for this tokenizer."""
        matcher = llguidance.LLMatcher(self.lltokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())

    def processor(self, grammar: str, prompt_length: int, gate: ThinkGate | None = None) -> MaskProcessor:
        matcher = llguidance.LLMatcher(self.lltokenizer, grammar, log_level=0)
        return MaskProcessor(matcher, prompt_length, self.lltokenizer.vocab_size, gate)


class ThinkGate:
    """Keeps a thinking model's reasoning free: the grammar applies only after the think-end marker. With the
    block opened by the prompt the gate waits for the end marker; otherwise the first token may open a block
    (then it waits), or the answer starts constrained at once."""

    def __init__(
        self, end_tokens: tuple[int, ...], start_token: int | None, inside: bool, eos_tokens: tuple[int, ...] = ()
    ) -> None:
        self.end_tokens = list(end_tokens)
        self.start_token = start_token
        self.eos_tokens = list(eos_tokens)
        """Refused while thinking: an answer that must follow a grammar cannot end before it begins."""
        self.state = "waiting" if inside else "first"
        self.generated: list[int] = []

    @property
    def open(self) -> bool:
        return self.state == "open"

    def feed(self, tokens: list[int]) -> list[int]:
        """Takes the new tokens; returns those the grammar must consume (the ones after the gate opened)."""
        for position, token in enumerate(tokens):
            if self.state == "first":
                self.state = "waiting" if token == self.start_token else "open"
                if self.state == "open":
                    return tokens[position:]
                continue
            if self.state == "waiting":
                self.generated.append(token)
                if self.end_tokens and self.generated[-len(self.end_tokens) :] == self.end_tokens:
                    self.state = "open"
                    return tokens[position + 1 :]
                continue
            return tokens[position:]
        return []


class MaskProcessor:
    """A logits processor for one sequence: only tokens the grammar allows next keep their logits."""

    def __init__(
        self, matcher: llguidance.LLMatcher, prompt_length: int, vocabulary_size: int, gate: ThinkGate | None = None
    ) -> None:
        self.matcher = matcher
        self.seen = prompt_length
        self.bitmask = allocate_token_bitmask(1, vocabulary_size)
        self.gate = gate

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        count = int(tokens.shape[-1])
        fresh = tokens.reshape(-1)[self.seen :].tolist() if count > self.seen else []
        self.seen = max(self.seen, count)
        if self.gate is not None and not self.gate.open:
            fresh = self.gate.feed(fresh)
            if self.gate.state == "waiting":
                if not self.gate.eos_tokens:
                    return logits
                blocked = np.zeros(logits.shape[-1], dtype=np.bool_)
                blocked[[t for t in self.gate.eos_tokens if t < logits.shape[-1]]] = True
                return mx.where(mx.array(blocked), mx.array(-mx.inf, dtype=logits.dtype), logits)
        for token in fresh:
            self.matcher.consume_token(token)
        fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        allowed = np.unpackbits(self.bitmask.view(np.uint8), bitorder="little")
        width = logits.shape[-1]
        if allowed.shape[0] < width:
            allowed = np.pad(allowed, (0, width - allowed.shape[0]))
        allowed = allowed[:width].astype(np.bool_)
        if self.gate is not None and self.gate.state == "first" and self.gate.start_token is not None:
            allowed[self.gate.start_token] = True  # the model may still open a think block first
        return mx.where(mx.array(allowed), logits, mx.array(-mx.inf, dtype=logits.dtype))

    @property
    def failed(self) -> str | None:
        return self.matcher.get_error() if self.matcher.is_error() else None
