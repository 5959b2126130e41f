"""Webhook delivery scheduling: outcome of an attempt, Retry-After, exponential backoff with jitter."""

from __future__ import annotations

import pytest

from config.settings import Settings
from tasks.webhooks import MAX_RETRY_AFTER_SECONDS, backoff_seconds, next_step, retry_after_seconds

SETTINGS = Settings.from_env(
    {"WEBHOOK_MAX_ATTEMPTS": "4", "WEBHOOK_RETRY_BASE_SECONDS": "2", "WEBHOOK_RETRY_MAX_SECONDS": "10"}
)


@pytest.mark.parametrize("code", [200, 201, 204, 299])
def test_2xx_delivers(code):
    assert next_step(code, True, 1, None, SETTINGS) == ("delivered", None)


def test_410_disables_the_webhook_at_once():
    assert next_step(410, True, 1, None, SETTINGS) == ("gone", None)


@pytest.mark.parametrize("code", [None, 301, 404, 500, 503])
def test_failures_are_retried_until_the_last_attempt(code):
    verdict, delay = next_step(code, True, 3, None, SETTINGS)
    assert verdict == "retry" and 0 <= delay <= 10
    assert next_step(code, True, 4, None, SETTINGS) == ("failed", None)


def test_a_refused_address_is_not_retried():
    assert next_step(None, False, 1, None, SETTINGS) == ("failed", None)


def test_retry_after_is_honoured_and_capped():
    assert next_step(503, True, 1, "7", SETTINGS) == ("retry", 7.0)
    assert next_step(503, True, 1, str(int(10 * MAX_RETRY_AFTER_SECONDS)), SETTINGS)[1] == MAX_RETRY_AFTER_SECONDS
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now
    assert retry_after_seconds("soon") is None


def test_backoff_doubles_up_to_the_maximum_with_jitter():
    for number, ceiling in ((1, 2), (2, 4), (3, 8), (4, 10), (9, 10)):
        delays = {backoff_seconds(number, SETTINGS) for _ in range(200)}
        assert all(0 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1  # jittered, so many failing deliveries spread out
