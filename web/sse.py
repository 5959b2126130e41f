"""Server-sent events: OpenAI's ``data: {json}`` chunks ending with ``data: [DONE]``, or named events
(``event: <type>``) as the Anthropic and Responses APIs stream them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response

from config.errors import ApiError
from web.errors import internal_error, unreachable_error

log = logging.getLogger(__name__)


def _frame(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _named_frame(payload: dict[str, Any]) -> str:
    return f"event: {payload['type']}\n{_frame(payload)}"


KEEPALIVE = ": keep-alive\n\n"
"""An SSE comment (clients ignore it): sent for a ``None`` chunk, while the model produces nothing, so that
a client that went away is noticed at once (its generation is cancelled), not at the next token."""


def sse_response(
    chunks: Iterable[dict[str, Any] | None],
    request_id: str,
    *,
    named: bool = False,
    error_event: Callable[[ApiError], dict[str, Any]] | None = None,
) -> Response:
    """Streams ``chunks``; an error mid-stream (an ``ApiError``, Redis or MongoDB gone: 503 ``service_unavailable``,
    anything else: 500) becomes a final error event, never a cut connection. ``named`` streams each chunk as
    ``event: <its type>`` and sends no ``[DONE]``."""
    frame = _named_frame if named else _frame

    def frames() -> Iterator[str]:
        try:
            for chunk in chunks:
                yield KEEPALIVE if chunk is None else frame(chunk)
        except Exception as exc:  # noqa: BLE001 - every failure ends the stream with its error event
            error = exc if isinstance(exc, ApiError) else unreachable_error(exc)
            if error is None:
                log.exception("the stream failed")
                error = internal_error()
            log.warning("stream ended with %s: %s", error.code, error.message)
            body = error_event(error) if error_event is not None else {**error.envelope(), "request_id": request_id}
            yield frame(body)
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                try:
                    close()  # a client that went away cancels the work behind the stream at once
                except Exception:  # noqa: BLE001 - e.g. Redis gone: the stream has ended either way
                    log.warning("could not cancel the work behind the stream", exc_info=True)
        if not named:
            yield "data: [DONE]\n\n"

    return Response(
        frames(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
