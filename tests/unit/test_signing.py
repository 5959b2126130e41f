"""Webhook signatures checked with the Standard Webhooks library's own verifier; no services."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tasks.signing import new_secret, signature_headers, standard_key, valid_secret

STANDARD_SECRET = new_secret()
BODY = b'{"event":"job.completed","data":{"text":"caf\xc3\xa9"}}'


def _headers(secret: str, body: bytes = BODY) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "webhook-id": "dlv-1",
        "webhook-timestamp": str(timestamp),
        **signature_headers(secret, "dlv-1", timestamp, body),
    }


@pytest.mark.parametrize(
    ("secret", "verifier_secret"),
    [
        pytest.param(STANDARD_SECRET, STANDARD_SECRET, id="whsec"),
        pytest.param("plain secret é", base64.b64encode("plain secret é".encode()).decode(), id="plain"),
    ],
)
def test_the_standard_verifier_accepts_both_kinds_of_secret(secret, verifier_secret):
    headers = _headers(secret)
    assert Webhook(verifier_secret).verify(BODY, headers) == {"event": "job.completed", "data": {"text": "café"}}
    with pytest.raises(WebhookVerificationError):
        Webhook(verifier_secret).verify(BODY.replace(b"completed", b"failed"), headers)


def test_the_sha256_header_is_the_hmac_of_the_body():
    secret = new_secret()
    expected = hmac.new(secret.encode(), BODY, hashlib.sha256).hexdigest()
    assert _headers(secret)["X-Webhook-Signature"] == f"sha256={expected}"


def test_the_standard_signature_for_a_fixed_timestamp():
    key = b"0123456789abcdef"
    headers = signature_headers("whsec_" + base64.b64encode(key).decode(), "dlv-1", 1700000000, BODY)
    digest = hmac.new(key, b"dlv-1.1700000000." + BODY, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()


def test_secrets():
    assert signature_headers("", "dlv-1", 1, BODY) == {}
    assert valid_secret(new_secret()) and valid_secret("anything") and not valid_secret("whsec_***")
    assert standard_key("whsec_YWJj") == b"abc" and standard_key("abc") == b"abc"
