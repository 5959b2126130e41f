"""Reasoning in a model's output: the text between its think markers (``<think>`` ... ``</think>``) is
``reasoning_content``, the rest is the answer. A chat template may open the block itself at the end of the
prompt; then the answer starts inside it."""

from __future__ import annotations

from dataclasses import dataclass, field

from models.stops import held_back


@dataclass(frozen=True)
class ThinkMarkers:
    start: str
    end: str
    end_tokens: tuple[int, ...]
    start_tokens: tuple[int, ...]


def markers_of(tokenizer: object) -> ThinkMarkers | None:
    """The think markers mlx-lm found in the tokenizer's vocabulary, if any."""
    start, end = getattr(tokenizer, "think_start", None), getattr(tokenizer, "think_end", None)
    if not start or not end:
        return None
    end_tokens = tuple(getattr(tokenizer, "think_end_tokens", None) or ())
    start_tokens = tuple(getattr(tokenizer, "think_start_tokens", None) or ())
    return ThinkMarkers(start, end, end_tokens, start_tokens)


@dataclass
class ThinkSplitter:
    """Splits streamed text into reasoning and answer; a marker split across pieces is held back until whole."""

    markers: ThinkMarkers
    inside: bool = False
    """The prompt opened the block: the text starts as reasoning."""
    reasoning: str = ""
    answer: str = ""
    _pending: str = ""
    _done: bool = False
    _started: bool = field(default=False)
    _closed: bool = False
    """The block has just closed: blank lines that follow it are dropped."""

    def feed(self, text: str) -> tuple[str, str]:
        """(new reasoning, new answer text) in ``text``."""
        self._pending += text
        reasoning, answer = "", ""
        while self._pending:
            if self._done:
                if self._closed and not (answer + self._pending).strip("\n"):
                    self._pending = ""  # the blank lines after the block are not part of the answer
                    break
                if self._closed and not answer:
                    self._pending = self._pending.lstrip("\n")
                answer, self._pending = answer + self._pending, ""
                self._closed = False
                break
            if self.inside:
                end = self._pending.find(self.markers.end)
                if end < 0:
                    keep = held_back(self._pending, [self.markers.end])
                    reasoning += self._pending[: len(self._pending) - keep]
                    self._pending = self._pending[len(self._pending) - keep :]
                    break
                reasoning += self._pending[:end]
                self._pending = self._pending[end + len(self.markers.end) :].lstrip("\n")
                self.inside, self._done, self._closed = False, True, True
                continue
            stripped = self._pending.lstrip()
            if not self._started and self.markers.start.startswith(stripped):
                break  # could still become the opening marker
            if not self._started and stripped.startswith(self.markers.start):
                self._pending = stripped[len(self.markers.start) :].lstrip("\n")
                self.inside, self._started = True, True
                continue
            self._started, self._done = True, True
        self.reasoning += reasoning
        self.answer += answer
        return reasoning, answer

    def finish(self) -> tuple[str, str]:
        """What was held back: reasoning when the block never closed, else answer."""
        rest, self._pending = self._pending, ""
        if self.inside:
            self.reasoning += rest
            return rest, ""
        self.answer += rest
        return "", rest
