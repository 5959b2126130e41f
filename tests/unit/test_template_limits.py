"""Workflow templates are bounded in size and time: what would exhaust the control worker is refused at compose
time when it is constant, and fails its step within a second of CPU when it depends on the input (CPU, not wall
time: a busy machine slows a render without making it any bigger)."""

from __future__ import annotations

import time

import pytest

from tasks.fusion.templates import MAX_VALUE_LENGTH, TemplateProblem, referenced_steps, render

CONSTANT_BOMBS = [
    "{{ 9**9**9 }}",
    "{{ 7**3000000 }}",
    "{{ 'x' * 10**9 }}",
    "{{ 'x' * 100000000 }}",
    "{{ [1] * 10**8 }}",
    "{{ 'x' | center(1000000000) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ '%0999999999d' % 1 }}",
    "text {{ 'ab' * 600000 }} more",
]


@pytest.mark.parametrize("template", CONSTANT_BOMBS)
def test_constant_bombs_are_refused_before_any_run_and_name_the_step(template):
    started = time.thread_time()
    with pytest.raises(TemplateProblem) as refused:
        referenced_steps({"input": template}, "steps[0]")
    assert time.thread_time() - started < 1, "bounded by the CPU it takes, however busy the machine"
    assert str(refused.value).startswith("steps[0].input: ")


INPUT_BOMBS = [
    ("{{ input.n ** input.m }}", {"n": 9, "m": 999_999_999}),
    ("{{ input.s * input.n }}", {"s": "x", "n": 10**10}),
    ("{{ input.s * input.n }}", {"s": "x", "n": 100_000_000}),
    ("{{ input.s | center(input.n) }}", {"s": "x", "n": 10**9}),
    ("{{ input.s.rjust(input.n) }}", {"s": "x", "n": 10**9}),
    ("{{ input.f.format(1) }}", {"f": "{:>1000000000}"}),
    ("{{ input.s | format(1) }}", {"s": "%1000000000d"}),
    (
        "{% for a in input.l %}{% for b in input.l %}{% for c in input.l %}.{% endfor %}{% endfor %}{% endfor %}",
        {"l": list(range(1000))},
    ),
    ("{% set s = input.s * 999999 %}{{ s ~ s ~ s }}", {"s": "x"}),
]


@pytest.mark.parametrize(("template", "given"), INPUT_BOMBS)
def test_bombs_made_from_the_input_fail_their_step_within_a_second(template, given):
    assert referenced_steps({"input": template}, "steps[0]") == set()
    started = time.thread_time()
    with pytest.raises(TemplateProblem) as failed:
        render(template, {"input": given, "steps": {}}, "bomb.input")
    assert time.thread_time() - started < 1, "bounded by the CPU it takes, however busy the machine"
    assert str(failed.value).startswith("bomb.input: ")


def test_ordinary_templates_render_as_before():
    context = {"input": {"n": 3, "name": "Ada", "vector": [0.5, 1.5]}, "steps": {"a": {"output": "hi"}}}
    assert render("{{ input.n ** 2 + 1 }}", context, "w") == 10
    assert render("{{ input.vector }}", context, "w") == [0.5, 1.5]
    assert render("Hello {{ input.name * 2 }} {{ '%05d' % input.n }}", context, "w") == "Hello AdaAda 00003"
    assert render("{{ steps.a.output | upper | center(6) }}", context, "w") == "  HI  "
    assert render("{{ 'x' * 1000 }}", context, "w") == "x" * 1000
    assert len(render("{{ 'x' * n }}", {**context, "n": MAX_VALUE_LENGTH}, "w")) == MAX_VALUE_LENGTH
    assert referenced_steps({"input": "{{ 2**10 }} {{ steps.a.output * 3 }}"}, "steps[1]") == {"a"}
