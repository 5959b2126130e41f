"""Server-sent events: OpenAI's ``data: {json}`` chunks ending with ``data: [DONE]``, or named events
(``event: <type>``) as the Anthropic and Responses APIs stream them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Response

from config.errors import ApiError

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
    """Streams ``chunks``; an ``ApiError`` mid-stream becomes an error event before the end. ``named`` streams
    each chunk as ``event: <its type>`` and sends no ``[DONE]``."""
    frame = _named_frame if named else _frame

    def frames() -> Iterator[str]:
        try:
            for chunk in chunks:
                yield KEEPALIVE if chunk is None else frame(chunk)
        except ApiError as exc:
            log.warning("stream ended with %s: %s", exc.code, exc.message)
            body = error_event(exc) if error_event is not None else {**exc.envelope(), "request_id": request_id}
            yield frame(body)
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a client that went away cancels the work behind the stream at once
        if not named:
            yield "data: [DONE]\n\n"

    return Response(
        frames(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
