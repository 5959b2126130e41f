"""Gunicorn settings for the web process: one process of threads, since views mostly wait on Redis. It refuses to
start on a non-loopback address without API keys (``config.exposure``)."""

import sys

from config.exposure import REFUSED_EXIT_STATUS, refusal, stored_keys_exist
from config.settings import Settings

_settings = Settings.from_env()

bind = f"{_settings.server_host}:{_settings.server_port}"
worker_class = "gthread"
workers = 1
threads = _settings.web_threads
timeout = 120
graceful_timeout = 10
keepalive = 5
# A request line past gunicorn's limit (4094 bytes by default) is refused by gunicorn itself, in plain text outside
# the OpenAI envelope (schemathesis found one: 4,560 bytes of query string); unlimited here means up to 1 MB for its
# parser, and the app answers a 400 naming the field like any other bad query.
limit_request_line = 0
accesslog = "-"


def on_starting(server) -> None:
    """Before binding: exits with ``REFUSED_EXIT_STATUS`` and the reason when the address needs keys and has none."""
    try:
        message = refusal(_settings, lambda: stored_keys_exist(_settings))
    except Exception as exc:  # noqa: BLE001 - MongoDB unreachable: whether keys exist is unknown, so refuse
        message = (
            f"refusing to listen on {_settings.server_host} without API_KEYS: MongoDB could not be asked for stored "
            f"keys ({type(exc).__name__}). Set API_KEYS, or start MongoDB, or listen on 127.0.0.1."
        )
    if message:
        server.log.error(message)
        sys.exit(REFUSED_EXIT_STATUS)
