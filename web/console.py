"""The web console at ``/console``: one page of plain JavaScript that calls the platform's own HTTP API from the
browser, so keys, scopes and limits apply to it as to any client. Its assets are files of this package (no CDN,
no library): the console works on a machine without internet. Not part of the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

ASSETS = Path(__file__).with_name("console_assets")

blp = Blueprint("console", __name__, url_prefix="/console", static_folder=ASSETS, static_url_path="/assets")


@blp.get("/")
def page() -> Response:
    """The console's single page; its views are chosen by the URL's fragment (``#models``, ``#jobs``, ...)."""
    response = send_from_directory(ASSETS, "index.html")
    response.headers["Cache-Control"] = "no-cache"
    return response
