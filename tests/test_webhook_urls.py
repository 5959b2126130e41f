"""The address check that protects webhook delivery, with the strict default configuration (nothing allowed)."""

from __future__ import annotations

import http.server
import threading

import pytest

from tasks.urls import UnsafeUrl, check_url, guarded_session


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
        "http://[2002:7f00:1::1]/",
        "http://[64:ff9b::a00:1]/",
        "http://[::127.0.0.1]/",
        "http://[::1/",
        "http://a..b/",
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


def test_the_delivery_session_checks_the_address_it_actually_connected_to():
    """What a rebinding name would reach: the connected peer is checked before anything is sent."""
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        with pytest.raises(UnsafeUrl):
            guarded_session([]).post(url, data=b"{}", timeout=5)
        assert received == []
        assert guarded_session(["127.0.0.0/8"]).post(url, data=b"{}", timeout=5).status_code == 204
        assert received == ["/hook"]
    finally:
        server.shutdown()
        server.server_close()
