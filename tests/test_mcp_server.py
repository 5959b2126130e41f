"""An agent uses the platform through MCP: the official MCP client (``ClientSession`` over the streamable HTTP
client) against the session's MCP server, which calls the session's API with the caller's key."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, submit_job
from tests.used_keys import remember

TOOLS = {
    "chat",
    "embed",
    "rag_query",
    "rag_search",
    "rag_ingest_text",
    "list_models",
    "run_workflow",
    "submit_job",
    "get_job",
    "cancel_job",
}
FESTIVAL = (
    "The Lumen Festival of light art was founded by the engineer Ida Brenn in the harbour town of Velmar. "
    "Every October its lanterns float on the canals for nine nights."
)
KEY = remember("sk-test-mcp-5c1e07")


@asynccontextmanager
async def mcp_session(url: str, key: str | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


def run(url: str, scenario: Callable[[ClientSession], Awaitable[None]], key: str | None = None) -> None:
    async def main() -> None:
        async with mcp_session(url, key) as session:
            await scenario(session)

    anyio.run(main)


class Progress:
    """The progress notifications of one tool call."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append((progress, total, message))


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content or json.loads(result.content[0].text)


def error_text(result: Any) -> str:
    assert result.is_error, result
    return result.content[0].text


def test_tools_and_resources_are_listed_and_read(mcp_url):
    async def scenario(session: ClientSession) -> None:
        tools = (await session.list_tools()).tools
        assert {tool.name for tool in tools} == TOOLS
        for tool in tools:
            assert tool.description and tool.input_schema["type"] == "object", tool.name
        resources = {str(resource.uri) for resource in (await session.list_resources()).resources}
        assert resources == {"mlxf://models", "mlxf://collections", "mlxf://workflows"}
        models = json.loads((await session.read_resource("mlxf://models")).contents[0].text)
        assert CHAT_MODEL in {model["id"] for model in models["data"]}
        workflows = json.loads((await session.read_resource("mlxf://workflows")).contents[0].text)
        assert "rag_with_rerank" in json.dumps(workflows)

    run(mcp_url, scenario)


def test_every_tool_with_progress_for_long_work(mcp_url, jobs_url, hold):
    collection = f"mcp-{uuid.uuid4().hex[:8]}"
    question = "Who founded the Lumen Festival?"

    async def scenario(session: ClientSession) -> None:
        listed = structured(await session.call_tool("list_models", {"type": "lm"}))
        assert CHAT_MODEL in {m["id"] for m in listed["models"]} and {m["type"] for m in listed["models"]} == {"lm"}

        said = structured(
            await session.call_tool(
                "chat", {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
            )
        )
        assert said["content"] and said["usage"]["completion_tokens"] <= 3

        embedded = structured(await session.call_tool("embed", {"model": EMBEDDING_MODEL, "input": ["a", "b"]}))
        assert embedded["dimensions"] == 384 and len(embedded["embeddings"]) == 2

        ingest_progress = Progress()
        ingested = structured(
            await session.call_tool(
                "rag_ingest_text",
                {"collection": collection, "text": FESTIVAL, "name": "lumen.txt"},
                progress_callback=ingest_progress,
            )
        )
        assert ingested["documents_ingested"] == 1 and ingested["chunks_created"] >= 1
        assert ingest_progress.seen and ingest_progress.seen[-1][0] == 1.0, ingest_progress.seen
        assert ingested["job_id"] in ingest_progress.seen[-1][2]

        found = structured(
            await session.call_tool("rag_search", {"collection": collection, "query": question, "top_k": 1})
        )
        assert found["results"][0]["file"] == "lumen.txt" and "Ida Brenn" in found["results"][0]["text"]

        answered = structured(
            await session.call_tool(
                "rag_query",
                {"collection": collection, "query": question, "max_tokens": 4, "similarity_threshold": 0},
            )
        )
        assert isinstance(answered["answer"], str) and "Ida Brenn" in answered["sources"][0]["text"]

        workflow_progress = Progress()
        ran = structured(
            await session.call_tool(
                "run_workflow",
                {
                    "workflow": "rag_with_rerank",
                    "input": {"query": question, "collection": collection},
                    "config": {"max_tokens": 4, "temperature": 0},
                },
                progress_callback=workflow_progress,
            )
        )
        steps = [entry["step"] for entry in ran["execution_trace"]]
        assert steps[0] == "embed_query" and steps[-1] == "generate_answer", ran["execution_trace"]
        fractions = [progress for progress, _total, _message in workflow_progress.seen]
        assert fractions == sorted(set(fractions)) and fractions[-1] == 1.0, workflow_progress.seen

        job_input = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
        submitted = structured(
            await session.call_tool("submit_job", {"model_id": CHAT_MODEL, "operation": "chat", "input": job_input})
        )
        job_progress = Progress()
        finished = structured(
            await session.call_tool(
                "get_job", {"job_id": submitted["job_id"], "wait": True}, progress_callback=job_progress
            )
        )
        assert finished["status"] == "completed" and finished["result"]["content"] is not None
        assert job_progress.seen[-1][0] == 1.0
        assert structured(await session.call_tool("get_job", {"job_id": submitted["job_id"]}))["status"] == "completed"
        refused = error_text(await session.call_tool("cancel_job", {"job_id": submitted["job_id"]}))
        assert "HTTP 409" in refused, refused

        held = hold("mcp-cancel")  # never released: only the cancel ends this job
        running = submit_job(jobs_url, CHAT_MODEL, "chat", {**job_input, "max_tokens": 64}, request_id=held.request_id)
        await anyio.to_thread.run_sync(held.wait_held)
        cancelled = structured(await session.call_tool("cancel_job", {"job_id": running.json()["job_id"]}))
        assert cancelled["status"] == "cancelled", cancelled

    run(mcp_url, scenario)


def test_a_bad_argument_is_a_tool_error_naming_it(mcp_url):
    async def scenario(session: ClientSession) -> None:
        ask = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        assert "max_tokens" in error_text(await session.call_tool("chat", {**ask, "max_tokens": 0}))
        assert "messages" in error_text(await session.call_tool("chat", {"model": CHAT_MODEL}))
        unknown = error_text(await session.call_tool("chat", {**ask, "model": "no/such-model"}))
        assert "chat: model: " in unknown and "HTTP 404" in unknown, unknown
        missing = error_text(await session.call_tool("rag_search", {"collection": "no-such-collection", "query": "x"}))
        assert "rag_search: collection: " in missing and "HTTP 404" in missing, missing
        bad_input = error_text(
            await session.call_tool(
                "submit_job", {"model_id": CHAT_MODEL, "operation": "chat", "input": {"messages": "Hi"}}
            )
        )
        assert "submit_job: input.messages" in bad_input, bad_input

    run(mcp_url, scenario)


def test_the_callers_key_reaches_the_api(stack, supervisor):
    """Behind a web that needs keys, the MCP server passes each caller's bearer key through: none is refused by the
    API (401, as a tool error), a valid one is served."""
    _web, api = stack.start_web("web-mcp-keys", {"API_KEYS": KEY})
    _mcp, url = stack.start_mcp(api, "mcp-keys")

    async def without_key(session: ClientSession) -> None:
        refused = error_text(await session.call_tool("list_models", {}))
        assert "HTTP 401" in refused, refused

    async def with_key(session: ClientSession) -> None:
        assert CHAT_MODEL in {m["id"] for m in structured(await session.call_tool("list_models", {}))["models"]}
        models = json.loads((await session.read_resource("mlxf://models")).contents[0].text)
        assert CHAT_MODEL in {model["id"] for model in models["data"]}

    run(url, without_key)
    run(url, with_key, key=KEY)
