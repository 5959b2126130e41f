"""Who is calling, and may they: sets ``g.caller`` (``web.identity``) on every request and refuses a missing, unknown,
revoked or expired key (401) or a key without the route's scope (403).

Keys are sent as ``Authorization: Bearer <key>`` (OpenAI clients) or ``x-api-key: <key>`` (Anthropic clients):
``API_KEYS`` from the environment (admin keys, compared in constant time) or keys stored by ``config.keys``, looked
up by their SHA-256 and cached for ``API_KEY_CACHE_SECONDS``. Without any key the API is open (``OPEN``). A key is
never logged.
"""

from __future__ import annotations

import hmac
import threading
import time
from datetime import UTC, datetime

from flask import Flask, current_app, g, request

from config import keys
from config.errors import ApiError
from config.keys import KeyRecord
from config.settings import Settings
from web.identity import ANONYMOUS, OPEN, Caller
from web.scopes import allowed, scope_for

PROTECTED = ("/v1/", "/api/", "/internal/", "/admin/")
OPEN_UNLESS_CONFIGURED = ("/health",)
"""Open to probes unless ``HEALTH_REQUIRES_KEY`` is set."""
ADMIN = Caller(owner="admin", name="admin", scopes=frozenset({"admin"}))
"""The caller of an ``API_KEYS`` key: every such key is the one admin."""
TOUCH_SECONDS = 60.0
"""A key's ``last_used_at`` is written at most this often by one web process."""
MOST_CACHED = 10000


def presented_key() -> str | None:
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def needs_key(path: str, health_requires_key: bool, metrics_requires_key: bool = False) -> bool:
    if path.startswith(PROTECTED):
        return True
    if path == "/metrics":
        return metrics_requires_key
    return health_requires_key and path.startswith(OPEN_UNLESS_CONFIGURED)


class KeyCache:
    """Stored keys as this web process last read them: by secret hash, and whether any is active."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._lock = threading.Lock()
        self._by_hash: dict[str, tuple[float, KeyRecord | None]] = {}
        self._any: tuple[float, bool] | None = None
        self._touched: dict[str, float] = {}

    def forget(self) -> None:
        """Drops everything read: a key changed by this process takes effect here at once."""
        with self._lock:
            self._by_hash.clear()
            self._any = None

    def any_active(self) -> bool:
        now = time.monotonic()
        if self._any is not None and now - self._any[0] < self.ttl:
            return self._any[1]
        found = keys.any_active()
        self._any = (now, found)
        return found

    def lookup(self, secret: str) -> KeyRecord | None:
        digest = keys.hash_secret(secret)
        now = time.monotonic()
        cached = self._by_hash.get(digest)
        if cached is not None and now - cached[0] < self.ttl:
            found = cached[1]
        else:
            found = keys.by_secret(secret)
            with self._lock:
                if len(self._by_hash) >= MOST_CACHED:
                    self._by_hash.clear()
                self._by_hash[digest] = (now, found)
        if found is None or not keys.same_hash(digest, found.secret_hash):
            return None
        return found

    def touch(self, key_id: str) -> None:
        """Records the key's use, at most once a minute."""
        now = time.monotonic()
        if now - self._touched.get(key_id, -TOUCH_SECONDS) < TOUCH_SECONDS:
            return
        self._touched[key_id] = now
        try:
            keys.touch(key_id, datetime.now(UTC))
        except Exception:  # noqa: BLE001 - the last use is a convenience; the request goes on
            current_app.logger.warning("could not record the last use of key %s", key_id, exc_info=True)


def key_cache() -> KeyCache:
    return current_app.extensions["api_keys"]


def keys_in_use(settings: Settings) -> bool:
    return bool(settings.api_key_list) or key_cache().any_active()


def caller_for(secret: str, settings: Settings) -> Caller:
    """The caller a presented secret stands for; 401 for an unknown, revoked or expired one."""
    if any(hmac.compare_digest(secret.encode(), admin.encode()) for admin in settings.api_key_list):
        return ADMIN
    found = key_cache().lookup(secret)
    state = found.state(datetime.now(UTC)) if found is not None else "unknown"
    if found is None or state == "revoked":
        raise ApiError(401, "The API key is not valid", code="invalid_api_key")
    if state == "expired":
        raise ApiError(401, f"The API key '{found.name}' expired; ask for a new one", code="expired_api_key")
    key_cache().touch(found.key_id)
    g.api_key = found
    return Caller(owner=found.key_id, name=found.name, scopes=found.scopes)


def _public_caller(settings: Settings, secret: str | None) -> Caller:
    """The caller of a route that needs no key: the key's when a valid one came, else anonymous. Without a key
    nothing is read: a public route (``/health``, ``/openapi.json``) answers at once with MongoDB down."""
    if secret is None:
        return ANONYMOUS
    try:
        return caller_for(secret, settings)
    except Exception:  # noqa: BLE001 - a public route answers whatever the key (or the key store) says
        return ANONYMOUS


def authenticate() -> None:
    settings = current_app.extensions["settings"]
    g.scope = scope_for(request.endpoint, request.method)
    secret = presented_key()
    if not needs_key(request.path, settings.health_requires_key, settings.metrics_requires_key):
        g.caller = _public_caller(settings, secret)
        return
    if not keys_in_use(settings):
        g.caller = OPEN
        return
    if secret is None:
        raise ApiError(
            401,
            "This API needs a key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')",
            code="missing_api_key",
        )
    g.caller = caller_for(secret, settings)
    if not allowed(g.caller, g.scope, request.method):
        raise ApiError(
            403,
            f"This key lacks the '{g.scope}' scope, which {request.method} {request.path} needs",
            code="insufficient_scope",
        )


def register_api_keys(app: Flask) -> None:
    app.extensions["api_keys"] = KeyCache(app.extensions["settings"].api_key_cache_seconds)
    app.before_request(authenticate)
