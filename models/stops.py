"""Stop sequences on generated text: cut at the first match, and hold back what could still become one."""

from __future__ import annotations


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop sequence, so must wait."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StopScanner:
    """Cuts generated text at the first stop sequence and says how much is safe to stream so far."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.sent = 0
        self.stopped = False
        self.matched: str | None = None
        """The stop sequence the text was cut at, once it was."""

    def feed(self, delta: str) -> str:
        """Adds ``delta``; returns the new text that may be sent now."""
        self.text += delta
        found = [(i, s) for s in self.stops if (i := self.text.find(s)) >= 0]
        if found:
            cut, self.matched = min(found)
            self.text = self.text[:cut]
            self.stopped = True
            ready = len(self.text)
        else:
            ready = len(self.text) - held_back(self.text, self.stops)
        fresh = self.text[self.sent : ready]
        self.sent = max(self.sent, ready)
        return fresh

    def flush(self) -> str:
        fresh = self.text[self.sent :]
        self.sent = len(self.text)
        return fresh
