"""The MCP resources: the platform's models, collections and workflows, as JSON read from its API."""

from __future__ import annotations

import json

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from mlxf.client import PlatformError
from mlxf.mcp_server.upstream import Upstream, tool_error_text


def register_resources(server: MCPServer, upstream: Upstream) -> None:
    async def read(path: str) -> str:
        try:
            return json.dumps(await upstream.run(upstream.platform().get, path), indent=2)
        except PlatformError as exc:
            raise ResourceError(tool_error_text(exc)) from None

    @server.resource("mlxf://models", name="models", mime_type="application/json")
    async def models() -> str:
        """Every model: id, type, status, memory, nodes, tags (``GET /v1/models``)."""
        return await read("/v1/models")

    @server.resource("mlxf://collections", name="collections", mime_type="application/json")
    async def collections() -> str:
        """The RAG collections this key may read: documents, chunks, embedding model (``GET /api/rag/collections``)."""
        return await read("/api/rag/collections")

    @server.resource("mlxf://workflows", name="workflows", mime_type="application/json")
    async def workflows() -> str:
        """The fusion workflows, predefined and composed, with their steps and input schemas
        (``GET /api/fusion/workflows``)."""
        return await read("/api/fusion/workflows")
