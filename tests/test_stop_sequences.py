"""Stop sequences cut streamed text exactly where a user expects, even when split across tokens."""

from __future__ import annotations

from models.stops import StopScanner, held_back


def feed_all(stops: list[str], deltas: list[str]) -> tuple[str, str, bool]:
    scanner = StopScanner(stops)
    streamed = ""
    for delta in deltas:
        streamed += scanner.feed(delta)
        if scanner.stopped:
            break
    streamed += scanner.flush()
    return streamed, scanner.text, scanner.stopped


def test_stop_split_across_deltas_is_never_streamed():
    streamed, text, stopped = feed_all(["END"], ["Hello E", "N", "D and more"])
    assert streamed == text == "Hello "
    assert stopped


def test_partial_match_that_is_not_a_stop_is_released():
    streamed, text, stopped = feed_all(["END"], ["Hello E", "ast"])
    assert streamed == text == "Hello East"
    assert not stopped


def test_earliest_of_several_stops_wins():
    assert feed_all(["b", "a"], ["xxab"])[1] == "xx"


def test_held_back_counts_the_longest_possible_prefix():
    assert held_back("abc<|", ["<|end|>"]) == 2
    assert held_back("abc", ["<|end|>"]) == 0
