"""The flask-smorest ``Api`` and ``Blueprint`` of this app: 400 (not 422) for invalid bodies, shared services."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import current_app
from flask_smorest import Api as SmorestApi
from flask_smorest import Blueprint as SmorestBlueprint
from webargs.flaskparser import FlaskParser

from tasks.dispatch import Call, Dispatcher
from web.schemas.errors import ErrorEnvelopeSchema


class OpenAIParser(FlaskParser):
    DEFAULT_VALIDATION_STATUS = 400


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = OpenAIParser()


class Api(SmorestApi):
    ERROR_SCHEMA = ErrorEnvelopeSchema

    def _register_error_handlers(self) -> None:
        """Errors are rendered by ``web.errors`` as the OpenAI envelope, not by flask-smorest."""


def dispatcher() -> Dispatcher:
    return current_app.extensions["dispatcher"]


def opened(call: Call) -> tuple[Iterator[dict[str, Any]], dict[str, Any]]:
    """A streaming call's events and its first event: nothing is sent before it, so that an error the worker
    answers before the first token keeps its HTTP status."""
    events = dispatcher().events(call)
    first = next(event for event in events if event["type"] != "idle")
    return events, first
