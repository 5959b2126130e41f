"""The address check that protects webhook delivery, with the strict default configuration (nothing allowed)."""

from __future__ import annotations

import pytest

from tasks.urls import UnsafeUrl, check_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
        "file:///etc/passwd",
        "http://user:pass@8.8.8.8/",
    ],
)
def test_non_public_targets_are_refused_by_default(url):
    with pytest.raises(UnsafeUrl):
        check_url(url, [])


def test_public_addresses_pass_and_configured_networks_are_allowed():
    check_url("https://8.8.8.8/hook", [])
    check_url("http://127.0.0.1:8000/hook", ["127.0.0.0/8"])
    with pytest.raises(UnsafeUrl):
        check_url("http://10.0.0.1/", ["127.0.0.0/8"])
