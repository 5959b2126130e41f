"""Records every request that needed the ``admin`` scope in the audit log (``config.audit``), refused ones too."""

from __future__ import annotations

from flask import Flask, Response, current_app, g, request

from config import audit
from web.identity import current_caller


def _record(response: Response) -> Response:
    if g.get("scope") != "admin":
        return response
    caller = current_caller()
    action = g.get("audit_action") or f"{request.method} {request.path}"
    target = g.get("audit_target") or next(iter((request.view_args or {}).values()), None)
    try:
        audit.record(caller.name, caller.owner, action, target, request.remote_addr, response.status_code)
    except Exception:  # noqa: BLE001 - MongoDB gone: the answer says so already, or does not depend on it
        current_app.logger.warning("could not write the audit entry of %s", action, exc_info=True)
    return response


def register_audit(app: Flask) -> None:
    app.after_request(_record)
