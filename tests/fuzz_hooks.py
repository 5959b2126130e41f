"""Schemathesis hooks of ``tests/test_openapi_fuzz.py`` (loaded through ``SCHEMATHESIS_HOOKS``).

They bound what a generated request may cost, nothing else: the fuzz run shares the session's stack and its
models, so a request never unloads, warms or (on demand) loads one of the session's models, nor deletes the
session's bash manual collection (its id is swapped for an unknown one, which exercises the 404 path instead),
and the numbers that set how much work a valid request asks of a model (tokens, choices, image size and steps)
are capped. A key the run creates (``POST /admin/keys``) is revoked at once: a stored key would put the whole
session's API behind keys. Every field, value and route is still generated.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, unquote

import schemathesis

from tests.conftest import DEFAULT_MODELS, ON_DEMAND_MODEL

PROTECTED = (*DEFAULT_MODELS, ON_DEMAND_MODEL, *filter(None, os.environ.get("FUZZ_KEEP", "").split(",")))
"""The session's models, and what the test names in ``FUZZ_KEEP``: the bash manual's collection and ingest job,
which a stateful run would otherwise find in a list and delete (as a collection or a vector store) or cancel."""

CAPS = {
    "max_tokens": 8,
    "max_completion_tokens": 8,
    "max_output_tokens": 8,
    "n": 2,
    "best_of": 2,
    "steps": 2,
    "width": 64,
    "height": 64,
    "top_k": 50,
    "replicas": 2,
    "wait": 1,
}
"""Upper bounds of the cost fields of generated bodies (a value within the bound is sent as generated)."""


def _capped(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: min(item, CAPS[key]) if key in CAPS and _number(item) else _capped(item) for key, item in value.items()
        }
    if isinstance(value, list):
        return [_capped(item) for item in value]
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    if case.method.upper() == "POST" and case.path == "/admin/keys" and response.status_code == 201:
        from config import keys, mongo
        from config.settings import Settings

        mongo.connect(Settings.from_env())
        keys.revoke(response.json()["id"])


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    for name, value in (case.path_parameters or {}).items():
        if unquote(str(value)) in PROTECTED:  # path parameters arrive here percent-encoded
            case.path_parameters[name] = quote(f"fuzz-{unquote(str(value))}", safe="")
    if isinstance(case.body, dict):
        case.body = _capped(case.body)
    if isinstance(case.query, dict):
        case.query = _capped(case.query)
