"""``python -m mlxf.mcp_server``: the MCP server on ``MCP_HOST``:``MCP_PORT`` (path ``/mcp``), calling the API at
``MCP_API_URL``."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import httpx
import uvicorn
from uvicorn.main import STARTUP_FAILURE

from config.exposure import REFUSED_EXIT_STATUS, is_loopback
from config.settings import Settings
from mlxf.mcp_server.app import create_app

log = logging.getLogger("mlxf.mcp_server")
API_WAIT_SECONDS = 30.0
"""How long a server on a non-loopback address waits for the API to answer whether it asks for keys."""


class QuietServer(uvicorn.Server):
    """uvicorn's server, but its housekeeping (the ``Date`` header, the check for a shutdown) runs once a second
    rather than ten times: at rest the process wakes once a second (``python -m bench idle``), and stops within a
    second of its signal."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            await asyncio.sleep(1.0)
            counter = (counter + 10) % 864000  # uvicorn's tick count: a multiple of 10 refreshes the Date header


def api_is_open(api_url: str) -> bool:
    """Whether the API answers a request that carries no key (waiting up to ``API_WAIT_SECONDS`` for it)."""
    deadline = time.monotonic() + API_WAIT_SECONDS
    while True:
        try:
            return httpx.get(f"{api_url}/v1/models", timeout=5).status_code != 401
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def main() -> int:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exposed = not is_loopback(settings.mcp_host) and not settings.allow_unauthenticated
    if exposed and api_is_open(settings.api_url):
        log.error(
            "refusing to listen on %s:%s: the API at %s asks for no key, so anyone who reaches this address could "
            "use it. Give the API keys (API_KEYS), listen on 127.0.0.1 (MCP_HOST), or set ALLOW_UNAUTHENTICATED=true.",
            settings.mcp_host,
            settings.mcp_port,
            settings.api_url,
        )
        return REFUSED_EXIT_STATUS
    log.info(
        "MCP server on http://%s:%s/mcp, calling the API at %s", settings.mcp_host, settings.mcp_port, settings.api_url
    )
    app = create_app(settings.api_url, settings.mcp_host)
    server = QuietServer(uvicorn.Config(app, host=settings.mcp_host, port=settings.mcp_port))
    server.run()
    return 0 if server.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
