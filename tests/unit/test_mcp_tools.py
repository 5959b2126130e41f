"""The MCP server's tools as an MCP client sees them, in memory (the SDK's ``Client`` on the server object): each
with a JSON schema, a bad argument refused naming it before any call, and an API error named as the tool's
argument. What the tools do against the real API is in tests/test_mcp_server.py."""

from __future__ import annotations

import json

import anyio
import httpx
from mcp import Client

from mlxf.mcp_server.app import build_server
from mlxf.mcp_server.upstream import caller_key

API = "http://api.test"


NOT_FOUND = {
    "error": {
        "type": "invalid_request_error",
        "code": "not_found",
        "message": "No such store.",
        "param": "vector_store_id",
    }
}
"""The API's answer to a search of a missing vector store."""


def test_tool_schemas_bad_arguments_and_api_errors_named_as_arguments():
    calls: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(404, json=NOT_FOUND)

    server = build_server(API, httpx.Client(transport=httpx.MockTransport(api)))

    async def scenario() -> None:
        async with Client(server) as client:
            tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            assert tools["chat"].input_schema["properties"]["max_tokens"]["maximum"] == 4096
            assert tools["submit_job"].input_schema["properties"]["operation"]["enum"][0] == "chat"

            refused = await client.call_tool("rag_search", {"collection": "notes", "query": "x", "top_k": 0})
            assert refused.is_error and "top_k" in refused.content[0].text and not calls

            caller_key.set("sk-caller")
            missing = await client.call_tool("rag_search", {"collection": "notes", "query": "x"})
            assert missing.is_error, missing
            assert "collection: No such store. (not_found, HTTP 404)" in missing.content[0].text
            assert calls[0].url.path == "/v1/vector_stores/notes/search"
            assert calls[0].headers["Authorization"] == "Bearer sk-caller"
            assert json.loads(calls[0].content)["max_num_results"] == 5

    anyio.run(scenario)
