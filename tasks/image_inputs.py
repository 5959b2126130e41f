"""The images of a chat request, made ready for a vision model's worker: every ``image_url`` part becomes an
``{"type": "image", "data": <base64>}`` part.

Data URLs are decoded; http(s) URLs are fetched here, before the request is
queued, within limits: public addresses only (unless ``IMAGE_URL_ALLOWED_NETWORKS``
says otherwise, checked again on the connected socket), no redirects to
anywhere unchecked, one time limit for the whole fetch (name lookup, connection,
every byte) and a size limit. A URL that breaks a limit is the client's 400
naming the part, never a fetch the worker has to wait for.
"""

from __future__ import annotations

import base64
import binascii
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3

from config.errors import ApiError
from config.settings import Settings
from tasks.urls import UnsafeUrl, check_url, guarded_session

MAX_REDIRECTS = 3
CHUNK_BYTES = 64 * 1024
FETCHES = ThreadPoolExecutor(max_workers=8, thread_name_prefix="image-fetch")
"""Fetches run here so that the caller waits for one deadline: a name lookup has no timeout of its own, and a
server may drip its bytes within every socket timeout. A fetch given up on ends at its next read."""


def has_images(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(message.get("content"), list) and any(part["type"] == "image_url" for part in message["content"])
        for message in messages
    )


def _refuse(where: str, message: str, code: str = "invalid_image_url") -> ApiError:
    return ApiError(400, f"{where}: {message}", code=code, param="messages")


def _data_url(url: str, where: str, limit: int) -> bytes:
    header, _, encoded = url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise _refuse(where, "a data URL must be data:image/<type>;base64,<data>")
    if len(encoded) > limit * 4 // 3 + 4:
        raise _refuse(where, f"the image is over the {limit} bytes allowed", code="image_too_large")
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise _refuse(where, "the data URL's base64 is invalid") from None


def _fetch(url: str, where: str, settings: Settings) -> bytes:
    """GETs ``url`` (and its redirects, each checked) within the size limit and one deadline for all of it."""
    seconds = settings.image_fetch_timeout_seconds
    fetch = FETCHES.submit(_fetch_by, url, where, settings, time.monotonic() + seconds)
    try:
        return fetch.result(timeout=seconds)
    except FutureTimeout:
        fetch.cancel()
        raise _refuse(where, f"fetching the image took over {seconds:g}s") from None


def _fetch_by(url: str, where: str, settings: Settings, deadline: float) -> bytes:
    networks = settings.image_url_networks
    limit = settings.image_max_bytes
    with guarded_session(networks) as session:
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                check_url(url, networks)
            except UnsafeUrl as exc:
                raise _refuse(where, f"the image URL may not be fetched: {exc}") from None
            remaining = deadline - time.monotonic()
            try:
                response = session.get(url, stream=True, timeout=max(remaining, 0.1), allow_redirects=False)
            except (requests.RequestException, UnsafeUrl) as exc:
                raise _refuse(where, f"the image could not be fetched: {type(exc).__name__}") from None
            with response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise _refuse(where, f"fetching the image answered HTTP {response.status_code}")
                declared = int(response.headers.get("content-length") or 0)
                if declared > limit:
                    raise _refuse(where, f"the image is over the {limit} bytes allowed", code="image_too_large")
                return _body(response, where, limit, deadline)
    raise _refuse(where, f"more than {MAX_REDIRECTS} redirects")


def _body(response: requests.Response, where: str, limit: int, deadline: float) -> bytes:
    """The body, read as it arrives (``read1``: whatever bytes are there, not a full chunk) until the deadline."""
    body = bytearray()
    try:
        while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
            body.extend(chunk)
            if len(body) > limit:
                raise _refuse(where, f"the image is over the {limit} bytes allowed", code="image_too_large")
            if time.monotonic() > deadline:
                raise _refuse(where, "fetching the image took too long")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise _refuse(where, f"the image could not be fetched: {type(exc).__name__}") from None
    return bytes(body)


def image_bytes(part: dict[str, Any], where: str, settings: Settings) -> bytes:
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise _refuse(where, "an image_url part needs image_url.url")
    if url.startswith("data:"):
        return _data_url(url, where, settings.image_max_bytes)
    if url.startswith(("http://", "https://")):
        return _fetch(url, where, settings)
    raise _refuse(where, "image URLs must be data:, http:// or https://")


def with_images(messages: list[dict[str, Any]], settings: Settings) -> list[dict[str, Any]]:
    """``messages`` with each ``image_url`` part replaced by the image's bytes; at most ``image_max_count``."""
    count = 0
    ready = []
    for m, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, list):
            ready.append(message)
            continue
        parts = []
        for p, part in enumerate(content):
            if part["type"] != "image_url":
                parts.append(part)
                continue
            count += 1
            if count > settings.image_max_count:
                raise _refuse(f"messages[{m}].content[{p}]", f"at most {settings.image_max_count} images per request")
            data = image_bytes(part, f"messages[{m}].content[{p}]", settings)
            parts.append({"type": "image", "data": base64.b64encode(data).decode()})
        ready.append({**message, "content": parts})
    return ready
