"""The one error type of the platform; it crosses the queue as a dict and is rendered once by ``web``."""

from __future__ import annotations

from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "payload_too_large_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class ApiError(Exception):
    """An error a caller sees: HTTP status plus the OpenAI envelope's ``type``, ``code``, ``message``, ``param``."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type or ERROR_TYPES.get(
            status, "internal_error" if status >= 500 else "invalid_request_error"
        )

    def envelope(self) -> dict[str, Any]:
        return {"error": {"type": self.error_type, "message": self.message, "param": self.param, "code": self.code}}

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, **self.envelope()["error"]}

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ApiError:
        return cls(
            status=int(fields.get("status", 500)),
            message=str(fields.get("message", "unknown error")),
            code=fields.get("code"),
            param=fields.get("param"),
            error_type=fields.get("type"),
        )
