"""API keys: with ``API_KEYS`` set, the API routes need one of them, sent as ``Authorization: Bearer <key>`` (OpenAI
clients) or ``x-api-key: <key>`` (Anthropic clients). Keys are compared in constant time and never logged."""

from __future__ import annotations

import hmac

from flask import Flask, current_app, request

from config.errors import ApiError

PROTECTED = ("/v1/", "/api/", "/internal/")
OPEN_UNLESS_CONFIGURED = ("/health",)
"""Open to probes unless ``HEALTH_REQUIRES_KEY`` is set."""


def presented_key() -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def needs_key(path: str, health_requires_key: bool, metrics_requires_key: bool = False) -> bool:
    if path.startswith(PROTECTED):
        return True
    if path == "/metrics":
        return metrics_requires_key
    return health_requires_key and path.startswith(OPEN_UNLESS_CONFIGURED)


def register_api_keys(app: Flask) -> None:
    @app.before_request
    def _check_api_key() -> None:
        settings = current_app.extensions["settings"]
        keys = settings.api_key_list
        if not keys or not needs_key(request.path, settings.health_requires_key, settings.metrics_requires_key):
            return
        given = presented_key()
        if given is None:
            raise ApiError(
                401,
                "This API needs a key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')",
                code="missing_api_key",
            )
        if not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
            raise ApiError(401, "The API key is not valid", code="invalid_api_key")
