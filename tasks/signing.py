"""Signatures of webhook deliveries: the specification's ``X-Webhook-Signature`` and Standard Webhooks' headers.

``X-Webhook-Signature: sha256=<hex>`` is the HMAC-SHA256 of the body keyed
with the secret's UTF-8 bytes. ``webhook-signature: v1,<base64>`` follows
Standard Webhooks (HMAC-SHA256 of ``id.timestamp.body``): a ``whsec_`` secret is
base64 after its prefix, as stock verifiers expect; any other secret is used as
its UTF-8 bytes, so a verifier is built with ``base64(secret)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

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
    signed = f"{message_id}.{timestamp}.".encode() + body
    standard = base64.b64encode(hmac.new(standard_key(secret), signed, hashlib.sha256).digest()).decode()
    return {"X-Webhook-Signature": f"sha256={plain}", "webhook-signature": f"v1,{standard}"}
