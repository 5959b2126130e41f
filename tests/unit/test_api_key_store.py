"""Stored API keys without MongoDB: secrets and their hashes, a key's state over time, scopes, the start-up
refusal on a public address, and the token counting of quotas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from config import keys
from config.exposure import is_loopback, refusal
from config.settings import Settings
from web.identity import SCOPES
from web.quotas import seconds_to_midnight, usage_tokens

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def key(**fields) -> keys.KeyRecord:
    return keys.KeyRecord(key_id="key_1", name="alice", scopes=frozenset({"inference"}), created_at=NOW, **fields)


def test_a_secret_is_long_random_and_stored_only_as_its_sha256():
    first, second = keys.new_secret(), keys.new_secret()
    assert first.startswith("mlxf-") and len(first) >= 5 + 43 and first != second
    digest = keys.hash_secret(first)
    assert len(digest) == 64 and first not in digest and digest == keys.hash_secret(first)
    assert keys.same_hash(digest, keys.hash_secret(first)) and not keys.same_hash(digest, keys.hash_secret(second))


def test_a_key_is_active_until_it_expires_or_is_revoked():
    assert key().state(NOW) == "active"
    assert key(expires_at=NOW + timedelta(seconds=1)).state(NOW) == "active"
    assert key(expires_at=NOW).state(NOW) == "expired"
    assert key(expires_at=NOW - timedelta(days=1)).state(NOW) == "expired"
    assert key(revoked_at=NOW - timedelta(days=1), expires_at=NOW - timedelta(days=2)).state(NOW) == "revoked"
    naive = key(expires_at=(NOW - timedelta(minutes=1)).replace(tzinfo=None))
    assert naive.state(NOW) == "expired"


def test_what_is_shown_of_a_key_holds_no_hash():
    shown = key(secret_hash=keys.hash_secret("mlxf-x"), quotas={"queued_jobs": 2}).public(NOW)
    assert keys.hash_secret("mlxf-x") not in str(shown) and "secret_hash" not in shown
    assert shown["quotas"] == {"queued_jobs": 2} and shown["state"] == "active"
    assert "mlxf-x" not in repr(key(secret_hash=keys.hash_secret("mlxf-x")))


def test_scopes_are_checked_and_the_same_as_the_web_layers():
    assert keys.SCOPES == SCOPES
    assert keys.parse_scopes("jobs, inference,jobs") == ["inference", "jobs"]
    with pytest.raises(keys.KeyChangeError, match="superuser"):
        keys.parse_scopes("inference,superuser")
    with pytest.raises(keys.KeyChangeError):
        keys.parse_scopes("")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
def test_loopback_addresses(host):
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.org"])
def test_other_addresses(host):
    assert not is_loopback(host)


def test_a_public_address_without_keys_is_refused_with_how_to_set_them():
    def settings(**environ: str) -> Settings:
        return Settings.from_env({"SERVER_HOST": "0.0.0.0", **environ})

    message = refusal(settings(), lambda: False)
    assert "API_KEYS=" in message and "python -m config.keys create" in message and "ALLOW_UNAUTHENTICATED" in message
    assert refusal(settings(), lambda: True) is None
    assert refusal(settings(API_KEYS="k1"), lambda: pytest.fail("asked MongoDB needlessly")) is None
    assert refusal(settings(ALLOW_UNAUTHENTICATED="true"), lambda: pytest.fail("asked MongoDB needlessly")) is None
    assert refusal(Settings.from_env({}), lambda: pytest.fail("loopback needs no keys")) is None


def test_tokens_of_openai_and_anthropic_usage():
    assert usage_tokens({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}) == 5
    assert usage_tokens({"input_tokens": 7, "output_tokens": 4}) == 11
    assert usage_tokens({"prompt_tokens": 3}) == 3
    assert usage_tokens(None) == 0


def test_the_day_resets_at_midnight_utc():
    assert seconds_to_midnight(NOW) == 12 * 3600 + 1
    assert seconds_to_midnight(datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)) == 2
