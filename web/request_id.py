"""``X-Request-ID``: taken from the request or generated, echoed in the response header and kept in ``g``."""

from __future__ import annotations

import re
import uuid

from flask import Flask, g, request

from config.logs import request_id_var

HEADER = "X-Request-ID"
_ACCEPTABLE = re.compile(r"^[\x21-\x7e]{1,200}$")


def new_request_id() -> str:
    return f"req-{uuid.uuid4().hex}"


def register_request_id(app: Flask) -> None:
    @app.before_request
    def _take_request_id() -> None:
        given = request.headers.get(HEADER, "")
        g.request_id = given if _ACCEPTABLE.match(given) else new_request_id()
        request_id_var.set(g.request_id)

    @app.after_request
    def _echo_request_id(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers[HEADER] = request_id
        return response
