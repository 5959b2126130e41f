"""The MCP server's ASGI app: the SDK's streamable HTTP transport at ``/mcp``, stateless, behind the middleware
that hands each caller's key to the tools."""

from __future__ import annotations

from typing import Any

import httpx
from mcp.server.mcpserver import MCPServer

from mlxf.mcp_server.resources import register_resources
from mlxf.mcp_server.tools import register_tools
from mlxf.mcp_server.upstream import BearerPassThrough, Upstream

INSTRUCTIONS = (
    "Tools of an mlx-fusion platform: chat with and embed with its models, answer from or search its RAG "
    "collections, add text to one, run its fusion workflows, and submit, follow and cancel jobs. list_models and "
    "the models, collections and workflows resources say what there is."
)


def build_server(api_url: str, http: httpx.Client | None = None) -> MCPServer:
    """The MCP server whose tools and resources call the API at ``api_url`` (through ``http``, if given)."""
    server = MCPServer("mlx-fusion", instructions=INSTRUCTIONS, version="0.1.0")
    upstream = Upstream(api_url, http)
    register_tools(server, upstream)
    register_resources(server, upstream)
    return server


def create_app(api_url: str, host: str = "127.0.0.1") -> Any:
    """Stateless (every request stands alone: a restarted server loses no session, any number of processes may
    serve), answering with a stream so that progress notifications reach the caller while a tool runs. ``host``:
    on loopback the SDK refuses requests whose Host header is another (DNS rebinding)."""
    app = build_server(api_url).streamable_http_app(stateless_http=True, host=host)
    return BearerPassThrough(app)
