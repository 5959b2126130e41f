"""What a batch input file must be (checked as it is uploaded): JSONL, each line ``custom_id``, ``method`` POST,
``url`` one of the batch endpoints and ``body``, every ``custom_id`` once, at most OpenAI's 50,000 lines."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from config.errors import ApiError

ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embed",
    "/v1/responses": "chat",
}
"""Batch endpoint -> the worker operation its lines run."""
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_REQUESTS = 50_000
MAX_CUSTOM_ID = 512


def _bad(number: int, message: str) -> ApiError:
    return ApiError(400, f"Line {number} of the batch file: {message}", code="invalid_file", param="file")


def requests_of(data: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, request) of every non-blank line of ``data``, checked; raises the 400 of the first bad one."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"The batch file is not UTF-8: {exc}", code="invalid_file", param="file") from None
    seen: set[str] = set()
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError as exc:
            raise _bad(number, f"not valid JSON ({exc})") from None
        if not isinstance(request, dict):
            raise _bad(number, "not a JSON object")
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID:
            raise _bad(number, f"'custom_id' must be a string of 1 to {MAX_CUSTOM_ID} characters")
        if custom_id in seen:
            raise _bad(number, f"'custom_id' {custom_id!r} is used by an earlier line")
        if request.get("method") != "POST":
            raise _bad(number, "'method' must be 'POST'")
        if request.get("url") not in ENDPOINTS:
            raise _bad(number, f"'url' must be one of {', '.join(ENDPOINTS)}")
        if not isinstance(request.get("body"), dict):
            raise _bad(number, "'body' must be a JSON object")
        count += 1
        if count > MAX_REQUESTS:
            raise ApiError(
                400, f"The batch file has more than {MAX_REQUESTS} requests", code="invalid_file", param="file"
            )
        seen.add(custom_id)
        yield number, request


def check(data: bytes) -> int:
    """The number of requests in a batch file, or the 400 of its first bad line (or of an empty file)."""
    count = sum(1 for _ in requests_of(data))
    if not count:
        raise ApiError(400, "The batch file has no requests", code="invalid_file", param="file")
    return count
