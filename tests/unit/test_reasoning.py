"""Reasoning split from the answer, and the grammar's gate that waits for the thinking to end (no services)."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import pytest

from models.constrained import Grammars, ThinkGate, json_schema_grammar
from models.reasoning import ThinkMarkers, ThinkSplitter

MARKERS = ThinkMarkers("<think>", "</think>", (14,), (13,))
CHAT_MODEL_DIR = Path(__file__).resolve().parents[2] / ".data" / "models" / "HuggingFaceTB--SmolLM2-135M-Instruct"


def split(text: str, inside: bool, piece: int) -> tuple[str, str]:
    splitter, reasoning, answer = ThinkSplitter(MARKERS, inside), "", ""
    for start in range(0, len(text), piece):
        r, a = splitter.feed(text[start : start + piece])
        reasoning, answer = reasoning + r, answer + a
    r, a = splitter.finish()
    assert (splitter.reasoning, splitter.answer) == (reasoning + r, answer + a)
    return reasoning + r, answer + a


@pytest.mark.parametrize("piece", [1, 4, 1000])
def test_reasoning_and_answer_are_split_at_the_markers(piece):
    assert split("adding two and two</think>\n\nThe answer\n\nis 4.", True, piece) == (
        "adding two and two",
        "The answer\n\nis 4.",
    )
    assert split("<think>\nhmm</think>Four.", False, piece) == ("hmm", "Four.")
    assert split("Four, no thinking.", False, piece) == ("", "Four, no thinking.")
    assert split("still thinking", True, piece) == ("still thinking", "")
    assert split("a </thin and more</think>b", True, piece) == ("a </thin and more", "b")


def test_the_gate_opens_after_the_end_marker_only():
    gate = ThinkGate((7, 8), start_token=None, inside=True, eos_tokens=(2,))
    assert gate.feed([5, 7]) == [] and not gate.open
    assert gate.feed([8, 40, 41]) == [40, 41] and gate.open
    first = ThinkGate((14,), start_token=13, inside=False)
    assert first.feed([13, 5]) == [] and first.state == "waiting"
    direct = ThinkGate((14,), start_token=13, inside=False)
    assert direct.feed([99, 100]) == [99, 100] and direct.open


@pytest.fixture(scope="module")
def grammars() -> Grammars:
    if not (CHAT_MODEL_DIR / "tokenizer.json").exists():
        pytest.fail("run `make models` first: the test reads SmolLM2's real tokenizer")
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    return Grammars(load_tokenizer(CHAT_MODEL_DIR), 49152)


def test_the_mask_waits_for_the_thinking_then_allows_only_json(grammars):
    grammar = json_schema_grammar({"type": "object"})
    prompt = [1, 2, 3]
    processor = grammars.processor(grammar, len(prompt), ThinkGate((14,), None, inside=True, eos_tokens=(2,)))
    logits = mx.zeros((1, 49152))
    thinking = processor(mx.array(prompt), logits)
    assert thinking[0, 2].item() == float("-inf")  # no ending inside the thinking
    assert mx.isfinite(thinking).sum().item() == 49152 - 1  # everything else is free
    processor(mx.array([*prompt, 300]), logits)
    answering = processor(mx.array([*prompt, 300, 14]), logits)
    allowed = mx.isfinite(answering).sum().item()
    assert 0 < allowed < 100  # now only what may open a JSON object
    brace = grammars.tokenizer.encode("{", add_special_tokens=False)[0]
    assert answering[0, brace].item() == 0.0
