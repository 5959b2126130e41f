"""Renders every error, Flask's own included, as the OpenAI envelope ``{"error": {type, message, param, code}}``."""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import pymongo.errors
import redis.exceptions
from flask import Flask, g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from config.errors import ApiError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limit_exceeded",
}


ANTHROPIC_PATHS = ("/v1/messages",)
"""Routes whose clients read Anthropic's envelope: it gets ``"type": "error"`` beside OpenAI's fields."""


def error_response(error: ApiError):
    body: dict[str, Any] = error.envelope()
    if has_request_context() and request.path.startswith(ANTHROPIC_PATHS):
        body = {"type": "error", **body}
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    response = jsonify(body)
    response.status_code = error.status
    response.headers.update(getattr(error, "headers", None) or {})
    return response


def _field_path(location_errors: Any, prefix: str = "") -> tuple[str | None, str]:
    """The first failing field of a marshmallow error dict, as ``messages[0].role``, and its message."""
    if isinstance(location_errors, list):
        first = location_errors[0] if location_errors else "invalid value"
        if isinstance(first, dict | list):
            return _field_path(first, prefix)
        return (prefix or None), str(first)
    if isinstance(location_errors, dict) and location_errors:
        key, value = next(iter(location_errors.items()))
        if key == "_schema":
            return _field_path(value, prefix)
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            path = f"{prefix}[{key}]"
        else:
            path = f"{prefix}.{key}" if prefix else str(key)
        return _field_path(value, path)
    return (prefix or None), "invalid value"


def validation_error(messages: dict[str, Any]) -> ApiError:
    """The 400 for webargs' ``{location: {field: [message]}}``, naming the first bad field."""
    location_errors = next(iter(messages.values())) if messages else {}
    param, message = _field_path(location_errors)
    if param is None:
        return ApiError(400, message if message != "invalid value" else "Invalid request body.", code="invalid_request")
    return ApiError(400, f"Invalid value for '{param}': {message}", code="invalid_value", param=param)


def http_error(exc: HTTPException) -> ApiError:
    data = getattr(exc, "data", None) or {}
    if exc.code in (400, 422) and data.get("messages"):
        return validation_error(data["messages"])
    status = exc.code or 500
    code = _HTTP_CODES.get(status)
    message = exc.description or exc.name
    if status == 404:
        message = "Unknown URL: no route matches this path."
    if status == 429:
        message = f"Rate limit exceeded ({exc.description}). Try again after the Retry-After seconds."
    return ApiError(status, message, code=code)


UNREACHABLE: tuple[tuple[str, str, tuple[type[Exception], ...]], ...] = (
    (
        "Redis",
        "the broker and the reply channels",
        (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError),
    ),
    (
        "MongoDB",
        "the registry, jobs and webhooks",
        (pymongo.errors.ConnectionFailure, pymongo.errors.ServerSelectionTimeoutError),
    ),
)
"""Each dependency, what the platform keeps in it, and the errors its client raises when it cannot be reached."""


def unreachable_error(exc: Exception) -> ApiError | None:
    """The 503 ``service_unavailable`` naming the dependency ``exc`` says cannot be reached (the client's request
    was fine, so never a 500); None for another error."""
    for dependency, what, errors in UNREACHABLE:
        if isinstance(exc, errors):
            log.warning("%s is unreachable: %s: %s", dependency, type(exc).__name__, exc)
            message = f"{dependency} ({what}) is unreachable; try again when it is back"
            return ApiError(503, message, code="service_unavailable")
    return None


def internal_error() -> ApiError:
    return ApiError(500, "The server hit an internal error.", code="internal_error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, error_response)
    app.register_error_handler(HTTPException, lambda exc: error_response(http_error(exc)))
    for _dependency, _what, errors in UNREACHABLE:
        for error in errors:
            app.register_error_handler(error, lambda exc: error_response(unreachable_error(exc)))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(internal_error())
