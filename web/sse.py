"""Server-sent events as OpenAI clients read them: ``data: {json}`` chunks, then ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Response

from config.errors import ApiError

log = logging.getLogger(__name__)


def _frame(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


KEEPALIVE = ": keep-alive\n\n"
"""An SSE comment (clients ignore it): sent for a ``None`` chunk, while the model produces nothing, so that
a client that went away is noticed at once (its generation is cancelled), not at the next token."""


def sse_response(chunks: Iterable[dict[str, Any] | None], request_id: str) -> Response:
    """Streams ``chunks``; an ``ApiError`` mid-stream becomes an ``{"error": ...}`` event before the end."""

    def frames() -> Iterator[str]:
        try:
            for chunk in chunks:
                yield KEEPALIVE if chunk is None else _frame(chunk)
        except ApiError as exc:
            log.warning("stream ended with %s: %s", exc.code, exc.message)
            yield _frame({**exc.envelope(), "request_id": request_id})
            return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a client that went away cancels the work behind the stream at once
        yield "data: [DONE]\n\n"

    return Response(
        frames(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
