"""Uploaded files read within a size limit: 413 naming the form field past it, 400 when empty."""

from __future__ import annotations

import base64

from werkzeug.datastructures import FileStorage

from config.errors import ApiError


def read_upload(upload: FileStorage, limit: int, param: str, what: str) -> bytes:
    """The bytes of ``upload`` (``what``: "The audio file", "An image") if it has 1 to ``limit`` of them."""
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise ApiError(413, f"{what} is over the {limit} bytes allowed", code="file_too_large", param=param)
    if not data:
        raise ApiError(400, f"{what} is empty", code="invalid_file", param=param)
    return data


def upload_base64(upload: FileStorage, limit: int, param: str, what: str) -> str:
    return base64.b64encode(read_upload(upload, limit, param, what)).decode()
