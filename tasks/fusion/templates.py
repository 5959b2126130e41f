"""Workflow templates (``{{ input.query }}``, ``{{ steps.embed_query.output }}``) in Jinja2's sandbox.

The sandbox refuses attributes that reach Python internals (``__class__``,
``__globals__``, ``mro`` ...); the environment has no loader (no files), no
globals but what a step is given, and no network. A value that is exactly one
``{{ expression }}`` keeps its type (a vector stays a list); any other string
renders to a string. Nested dicts and lists are rendered value by value.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2 import TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.runtime import StrictUndefined, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

ENVIRONMENT = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
ENVIRONMENT.globals.clear()
ONE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expression>.*)\}\}\s*$", re.S)
MAX_TEMPLATE_CHARS = 20_000


class TemplateProblem(ValueError):
    """A template that does not parse, or failed (or was refused) while rendering; the message says where."""


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
    template that does not parse."""
    found: set[str] = set()
    for place, text in _strings(value, where):
        if len(text) > MAX_TEMPLATE_CHARS:
            raise TemplateProblem(f"{place}: a template may have at most {MAX_TEMPLATE_CHARS} characters")
        try:
            tree = ENVIRONMENT.parse(text)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{place}: {exc.message} (line {exc.lineno})") from None
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
        single = ONE_EXPRESSION.match(value)
        if single and "{{" not in single.group("expression") and "}}" not in single.group("expression"):
            result = ENVIRONMENT.compile_expression(single.group("expression"), undefined_to_none=False)(**context)
            if isinstance(result, Undefined):
                str(result)  # raises: SecurityError for what the sandbox refused, UndefinedError for a missing name
            return result
        return ENVIRONMENT.from_string(value).render(**context)
    except TemplateProblem:
        raise
    except SecurityError as exc:
        raise TemplateProblem(f"{where}: refused by the sandbox: {exc}") from None
    except UndefinedError as exc:
        raise TemplateProblem(f"{where}: {exc.message}") from None
    except TemplateError as exc:
        raise TemplateProblem(f"{where}: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
        raise TemplateProblem(f"{where}: {type(exc).__name__}: {exc}") from None
