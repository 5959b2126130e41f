"""The flask-smorest ``Api`` and ``Blueprint`` of this app: 400 (not 422) for invalid bodies, shared services."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import flask
from apispec import BasePlugin
from flask import current_app
from flask_smorest import Api as SmorestApi
from flask_smorest import Blueprint as SmorestBlueprint
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from config.errors import ApiError
from tasks.dispatch import Call, Dispatcher
from web.identity import current_caller
from web.quotas import counted_events
from web.schemas.errors import ErrorEnvelopeSchema

MAX_INTEGER = 2**63 - 1


def _integer(text: str) -> int:
    """A JSON integer within 64 bits: MongoDB (and most JSON readers) hold no larger one, so a larger one is the
    client's 400 here rather than a 500 at the first write."""
    number = int(text)
    if abs(number) > MAX_INTEGER:
        raise ApiError(
            400, f"The number {text[:24]}{'...' if len(text) > 24 else ''} is beyond 64 bits", code="invalid_value"
        )
    return number


class OpenAIParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not is_json_request(req):
            return core.missing
        return json.loads(req.get_data(cache=True), parse_int=_integer)


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = OpenAIParser()


class KeyAnswers(BasePlugin):
    """Documents on every operation behind API keys the answers the key check gives before any view runs: 401
    (no key, or an unknown, revoked or expired one) and 403 (a key without the route's scope), in the error
    envelope (see ``web.auth``)."""

    PROTECTED = ("/v1/", "/api/", "/internal/", "/admin/")
    ANSWERS = {
        "401": "No API key, or one that is unknown, revoked or expired (when the API runs with keys)",
        "403": "The API key lacks the scope this route needs (insufficient_scope, naming it)",
    }

    def operation_helper(self, path: str | None = None, operations: dict | None = None, **_kwargs: Any) -> None:
        if not path or not path.startswith(self.PROTECTED):
            return
        for operation in (operations or {}).values():
            responses = operation.setdefault("responses", {})
            for status, description in self.ANSWERS.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
                    },
                )


class Api(SmorestApi):
    ERROR_SCHEMA = ErrorEnvelopeSchema

    def __init__(self, app: flask.Flask) -> None:
        super().__init__(app, spec_kwargs={"extra_plugins": [KeyAnswers()]})

    def _register_error_handlers(self) -> None:
        """Errors are rendered by ``web.errors`` as the OpenAI envelope, not by flask-smorest."""


def dispatcher() -> Dispatcher:
    return current_app.extensions["dispatcher"]


def opened(call: Call) -> tuple[Iterator[dict[str, Any]], dict[str, Any]]:
    """A streaming call's events and its first event: nothing is sent before it, so that an error the worker
    answers before the first token keeps its HTTP status."""
    owner = current_caller().owner
    events = counted_events(dispatcher().events(call), owner, current_app.extensions["redis"])
    first = next(event for event in events if event["type"] != "idle")
    return events, first
