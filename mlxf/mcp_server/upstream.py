"""The API the MCP server calls, with the key of the MCP request being served."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar

import anyio
import httpx
from mcp.server.mcpserver.exceptions import ToolError

from mlxf.client import Platform, PlatformError

Result = TypeVar("Result")

caller_key: ContextVar[str | None] = ContextVar("caller_key", default=None)
"""The bearer key of the MCP request being served (``BearerPassThrough`` sets it; the SDK carries it to the
handler of each message)."""


class BearerPassThrough:
    """ASGI middleware: the request's ``Authorization: Bearer <key>`` (or ``x-api-key``) becomes ``caller_key``."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http":
            headers = {name.lower(): value.decode("latin-1") for name, value in scope["headers"]}
            authorization = headers.get(b"authorization", "")
            bearer = authorization[7:].strip() if authorization[:7].lower() == "bearer " else None
            caller_key.set(bearer or headers.get(b"x-api-key") or None)
        await self.app(scope, receive, send)


class Upstream:
    """The platform's API at ``base_url``; ``platform()`` is a client with the current caller's key. ``http``: the
    ``httpx.Client`` every call goes through (default: one with a 600 s read timeout, a job's longest wait)."""

    def __init__(self, base_url: str, http: httpx.Client | None = None) -> None:
        self.base_url = base_url
        self.http = http or httpx.Client(timeout=httpx.Timeout(600, connect=10))

    def platform(self) -> Platform:
        return Platform(self.base_url, caller_key.get(), http=self.http)

    async def run(self, method: Callable[..., Result], *args: Any, **kwargs: Any) -> Result:
        """``method(*args, **kwargs)`` (a ``Platform`` call, which blocks) in a worker thread."""
        return await anyio.to_thread.run_sync(partial(method, *args, **kwargs))

    async def call(
        self, method: Callable[..., Result], *args: Any, renamed: dict[str, str] | None = None, **kwargs: Any
    ) -> Result:
        """``run``, for a tool: an API error becomes a tool error (``isError``) naming the field the API named, as
        the tool's argument of that field (``renamed``: the API's field name to the argument's, where they differ)."""
        try:
            return await self.run(method, *args, **kwargs)
        except PlatformError as exc:
            if exc.param and renamed:
                head, dot, rest = exc.param.partition(".")
                exc.param = renamed.get(exc.param) or (renamed[head] + dot + rest if head in renamed else exc.param)
            raise ToolError(tool_error_text(exc)) from None


def tool_error_text(exc: PlatformError) -> str:
    """``<param>: <message> (<code>, HTTP <status>)``: the API's field name first, as the tool's argument."""
    where = f"{exc.param}: " if exc.param else ""
    return f"{where}{exc.message} ({exc.code or 'error'}, HTTP {exc.status})"
