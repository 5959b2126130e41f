"""Whether the web process may start where it listens: on a loopback address always; on any other only with API
keys (``API_KEYS`` or a stored key) or when ``ALLOW_UNAUTHENTICATED`` says the operator means it."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

from config import keys, mongo
from config.settings import Settings

REFUSED_EXIT_STATUS = 78
"""sysexits' EX_CONFIG: the restart loop does not start a process again that exits with it."""
MONGO_WAIT_SECONDS = 30.0
"""How long the check waits for MongoDB to answer (``make run`` starts it beside the web)."""


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refusal(settings: Settings, stored_keys: Callable[[], bool]) -> str | None:
    """The message the web refuses to start with, or ``None``; ``stored_keys`` says whether an active key is
    stored (asked only when needed)."""
    if is_loopback(settings.server_host) or settings.api_key_list or settings.allow_unauthenticated:
        return None
    if stored_keys():
        return None
    return (
        f"refusing to listen on {settings.server_host}:{settings.server_port} without API keys: anyone who reaches "
        "this address could load models, run workflows and read every job. Create a key with "
        "`python -m config.keys create --name NAME --scopes admin` (or set API_KEYS=<key>[,<key>...]), "
        "listen on 127.0.0.1 (SERVER_HOST), or set ALLOW_UNAUTHENTICATED=true if this network is trusted."
    )


def stored_keys_exist(settings: Settings) -> bool:
    """Whether MongoDB holds an active key, waiting for it to answer up to ``MONGO_WAIT_SECONDS``."""
    deadline = time.monotonic() + MONGO_WAIT_SECONDS
    while True:
        try:
            mongo.connect(settings)
            return keys.any_active()
        except Exception:  # noqa: BLE001 - not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
        finally:
            mongo.disconnect()
