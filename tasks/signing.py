"""Signatures of webhook deliveries: the specification's ``X-Webhook-Signature`` and Standard Webhooks' headers.

``X-Webhook-Signature: sha256=<hex>`` is the HMAC-SHA256 of the body keyed
with the secret's UTF-8 bytes. ``webhook-signature: v1,<base64>`` follows
Standard Webhooks (HMAC-SHA256 of ``id.timestamp.body``), signed by the
``standardwebhooks`` library: a ``whsec_`` secret is base64 after its prefix, as
stock verifiers expect; any other secret is used as its UTF-8 bytes, so a
verifier is built with ``base64(secret)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

STANDARD_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh secret in Standard Webhooks' format."""
    return STANDARD_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def valid_secret(secret: str) -> bool:
    """False for a ``whsec_`` secret whose rest is not base64 (it could not be used to sign)."""
    if not secret.startswith(STANDARD_PREFIX):
        return True
    try:
        return bool(base64.b64decode(secret[len(STANDARD_PREFIX) :], validate=True))
    except ValueError:
        return False


def standard_key(secret: str) -> bytes:
    if secret.startswith(STANDARD_PREFIX):
        return base64.b64decode(secret[len(STANDARD_PREFIX) :])
    return secret.encode()


def signature_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Both signature headers for one delivery attempt; empty when there is no secret."""
    if not secret:
        return {}
    plain = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Webhook-Signature": f"sha256={plain}",
        "webhook-signature": _standard_signature(secret, message_id, timestamp, body),
    }


def _standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``; the body is the UTF-8 of the delivery's JSON, as the library and its verifiers read it."""
    key = standard_key(secret)
    if not key:
        # The library refuses an empty key; a ``whsec_`` callback secret whose rest decodes to nothing
        # (callback secrets are not checked with ``valid_secret``) is signed with it as it always was.
        signed = f"{message_id}.{timestamp}.".encode() + body
        return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return Webhook(key).sign(message_id, datetime.fromtimestamp(timestamp, tz=UTC), body.decode())
