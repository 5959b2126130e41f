"""Workflow templates (``{{ input.query }}``, ``{{ steps.embed_query.output }}``) in Jinja2's sandbox.

The sandbox refuses attributes that reach Python internals (``__class__``,
``__globals__``, ``mro`` ...); the environment has no loader (no files), no
globals but what a step is given, and no network. A value that is exactly one
``{{ expression }}`` keeps its type (a vector stays a list); any other string
renders to a string. Nested dicts and lists are rendered value by value.

The sandbox alone bounds neither size nor time (``{{ 9**9**9 }}``, ``{{ 'x' * 10**10 }}``, and Jinja folds
constants while compiling), so ``BoundedEnvironment`` intercepts the operators that grow a value, checks the
numbers given to filters and methods, caps what a value may grow to, and a render stops at its deadline.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from types import FrameType
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.runtime import Context, StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expression>.*)\}\}\s*$", re.S)
MAX_TEMPLATE_CHARS = 20_000
MAX_VALUE_LENGTH = 1_000_000
"""The most characters a string, or items a list, that a template makes may have."""
MAX_ARGUMENT = 100_000
"""The largest number a filter or method may be given (a width, a count): ``center(10**9)`` is refused."""
MAX_INTEGER = 2**63 - 1
"""Numbers that arithmetic makes stay within 64 bits, what JSON readers and MongoDB hold."""
RENDER_SECONDS = 0.5
"""The longest one template may render (loops over loops stop here)."""
FORMAT_WIDTH = re.compile(r"\d{6,}")


class TemplateProblem(ValueError):
    """A template that does not parse, or failed (or was refused) while rendering; the message says where."""


def _length(value: Any) -> int | None:
    return len(value) if isinstance(value, str | bytes | list | tuple) else None


def _check_made(value: Any) -> Any:
    """``value`` if it is within the limits of what a template may make; raises ``TemplateProblem`` otherwise."""
    length = _length(value)
    if length is not None and length > MAX_VALUE_LENGTH:
        raise TemplateProblem(f"a value of {length} characters or items is refused (at most {MAX_VALUE_LENGTH})")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INTEGER:
        raise TemplateProblem("a number beyond 64 bits is refused")
    return value


def _check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        for inner in value if isinstance(value, tuple) else (value,):
            if isinstance(inner, int | float) and not isinstance(inner, bool) and abs(inner) > MAX_ARGUMENT:
                raise TemplateProblem(f"the number {inner:g} is refused as an argument (at most {MAX_ARGUMENT})")


def _check_format(text: Any) -> None:
    if isinstance(text, str) and FORMAT_WIDTH.search(text):
        raise TemplateProblem(f"a format with a width or precision over {MAX_ARGUMENT} is refused")


def bounded_binop(operator: str, left: Any, right: Any) -> Any:
    """``left <operator> right`` for the operators that grow a value, refused before computing when the result
    would pass the limits."""
    if operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            if max(abs(left).bit_length(), 1) * right > 64 and abs(left) > 1:
                raise TemplateProblem("a number beyond 64 bits is refused")
        return _check_made(left**right)
    if operator == "*":
        for sequence, times in ((left, right), (right, left)):
            length = _length(sequence)
            if length is not None and isinstance(times, int) and length * times > MAX_VALUE_LENGTH:
                raise TemplateProblem(f"a value of {length * times} characters or items is refused")
        return _check_made(left * right)
    if operator == "%":
        _check_format(left)
        _check_arguments(right if isinstance(right, tuple) else (right,), {})
        return _check_made(left % right)
    left_length, right_length = _length(left), _length(right)
    if left_length is not None and right_length is not None and left_length + right_length > MAX_VALUE_LENGTH:
        raise TemplateProblem(f"a value of {left_length + right_length} characters or items is refused")
    return _check_made(left + right)


def _bounded_filter(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` whose arguments (after the filtered value) and result are checked against the limits."""
    leading = 1 if _PassArg.from_obj(function) is None else 2

    @wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _check_arguments(args[leading:], kwargs)
        if function.__name__ == "do_format":
            _check_format(args[leading - 1])
        return _check_made(function(*args, **kwargs))

    return bounded


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox with limits on what a template may make (see the module's docstring)."""

    intercepted_binops = frozenset({"**", "*", "%", "+"})

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False)
        self.globals.clear()
        self.filters = {name: _bounded_filter(function) for name, function in self.filters.items()}

    def add_filter(self, name: str, function: Callable[..., Any]) -> None:
        self.filters[name] = _bounded_filter(function)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return bounded_binop(operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - Jinja's
        _check_arguments(args, kwargs)
        if getattr(__obj, "__name__", "") in {"format", "format_map"}:  # the sandbox wraps str.format
            _check_format(getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None))
        return _check_made(super().call(__context, __obj, *args, **kwargs))


ENVIRONMENT = BoundedEnvironment()


@contextmanager
def _deadline(seconds: float, where: str) -> Iterator[None]:
    """Stops a template's own code (frames compiled from ``<template>``) once this thread has spent ``seconds`` of
    CPU on it: what a template costs, not how busy the machine or the worker's other threads are."""
    ends = time.thread_time() + seconds

    def on_line(frame: FrameType, event: str, arg: Any) -> Any:
        if time.thread_time() > ends:
            raise TemplateProblem(f"{where}: rendering took longer than {seconds} s of CPU")
        return on_line

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        return on_line if frame.f_code.co_filename == "<template>" else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)


def _constant(node: nodes.Node) -> Any:
    """The value of a constant expression, computed within the limits; ``nodes.Impossible`` when not constant."""
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        return [_constant(item) for item in node.items]
    if isinstance(node, nodes.BinExpr):
        left, right = _constant(node.left), _constant(node.right)
        if node.operator in BoundedEnvironment.intercepted_binops:
            return bounded_binop(node.operator, left, right)
        return node.as_const()
    if isinstance(node, nodes.Neg):
        return -_constant(node.node)
    raise nodes.Impossible()


def _check_constants(tree: nodes.Template, place: str) -> None:
    """Refuses, before any run, the arithmetic on constants and the constant arguments that pass the limits."""
    for node in tree.find_all(nodes.BinExpr):
        try:
            _constant(node)
        except nodes.Impossible:
            continue
        except TemplateProblem as exc:
            raise TemplateProblem(f"{place}: {exc}") from None
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise TemplateProblem(f"{place}: {type(exc).__name__}: {exc}") from None
    for node in (*tree.find_all(nodes.Filter), *tree.find_all(nodes.Call)):
        for argument in (*node.args, *(pair.value for pair in node.kwargs)):
            try:
                _check_arguments((_constant(argument),), {})
            except nodes.Impossible:
                continue
            except TemplateProblem as exc:
                raise TemplateProblem(f"{place}: {exc}") from None


def _strings(value: Any, where: str) -> list[tuple[str, str]]:
    if isinstance(value, str):
        return [(where, value)]
    if isinstance(value, dict):
        return [found for key, inner in value.items() for found in _strings(inner, f"{where}.{key}")]
    if isinstance(value, list):
        return [found for i, inner in enumerate(value) for found in _strings(inner, f"{where}[{i}]")]
    return []


def referenced_steps(value: Any, where: str) -> set[str]:
    """The step ids that the templates in ``value`` read (``steps.<id>``); raises ``TemplateProblem`` for a
    template that does not parse or whose constants pass the limits."""
    found: set[str] = set()
    for place, text in _strings(value, where):
        if len(text) > MAX_TEMPLATE_CHARS:
            raise TemplateProblem(f"{place}: a template may have at most {MAX_TEMPLATE_CHARS} characters")
        try:
            tree = ENVIRONMENT.parse(text)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{place}: {exc.message} (line {exc.lineno})") from None
        _check_constants(tree, place)
        for node in tree.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name == "steps":
                found.add(node.attr)
        for node in tree.find_all(nodes.Getitem):
            if isinstance(node.node, nodes.Name) and node.node.name == "steps" and isinstance(node.arg, nodes.Const):
                found.add(str(node.arg.value))
    return found


def render(value: Any, context: dict[str, Any], where: str) -> Any:
    """``value`` with every template rendered against ``context`` (``input``, ``steps``, ``config``)."""
    if isinstance(value, dict):
        return {key: render(inner, context, f"{where}.{key}") for key, inner in value.items()}
    if isinstance(value, list):
        return [render(inner, context, f"{where}[{i}]") for i, inner in enumerate(value)]
    if not isinstance(value, str) or "{" not in value:
        return value
    try:
        with _deadline(RENDER_SECONDS, where):
            single = ONE_EXPRESSION.match(value)
            if single and "{{" not in single.group("expression") and "}}" not in single.group("expression"):
                expression = ENVIRONMENT.compile_expression(single.group("expression"), undefined_to_none=False)
                result = expression(**context)
                if isinstance(result, Undefined):
                    str(result)  # raises: SecurityError for what the sandbox refused, UndefinedError for a missing name
                return result
            return _check_made(ENVIRONMENT.from_string(value).render(**context))
    except TemplateProblem as exc:
        raise TemplateProblem(str(exc) if str(exc).startswith(where) else f"{where}: {exc}") from None
    except SecurityError as exc:
        raise TemplateProblem(f"{where}: refused by the sandbox: {exc}") from None
    except UndefinedError as exc:
        raise TemplateProblem(f"{where}: {exc.message}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"{where}: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise TemplateProblem(f"{where}: {type(exc).__name__}: {exc}") from None
