"""API versioning (specification section 9): ``X-API-Version`` accepted (``1`` or ``v1``; another is a 400) and
answered on every response; routes being retired carry ``X-API-Deprecated: true`` and ``X-API-Sunset: <date>``,
configured with ``DEPRECATED_ROUTES`` (``/path/prefix=YYYY-MM-DD``, comma-separated)."""

from __future__ import annotations

from flask import Flask, Response, request

from config.errors import ApiError
from config.settings import Settings

API_VERSION = "1"
ACCEPTED = {"1", "v1"}


def deprecated_routes(settings: Settings) -> list[tuple[str, str]]:
    """(path prefix, sunset date) pairs, longest prefix first."""
    pairs = []
    for item in settings.deprecated_routes.split(","):
        prefix, _, sunset = item.strip().partition("=")
        if prefix and sunset:
            pairs.append((prefix.strip(), sunset.strip()))
    return sorted(pairs, key=lambda pair: -len(pair[0]))


def register_versioning(app: Flask, settings: Settings) -> None:
    retiring = deprecated_routes(settings)

    @app.before_request
    def _check_version() -> None:
        asked = request.headers.get("X-API-Version")
        if asked is not None and asked.strip().lower() not in ACCEPTED:
            raise ApiError(
                400,
                f"API version {asked!r} is not served; this server speaks version {API_VERSION}",
                code="unsupported_api_version",
                param="X-API-Version",
            )

    @app.after_request
    def _answer_version(response: Response) -> Response:
        response.headers["X-API-Version"] = API_VERSION
        for prefix, sunset in retiring:
            if request.path.startswith(prefix):
                response.headers["X-API-Deprecated"] = "true"
                response.headers["X-API-Sunset"] = sunset
                break
        return response
