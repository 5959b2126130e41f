"""The MCP tools: each one call (or a submission and its follow-up) of the platform's API.

Arguments are checked against each tool's JSON schema before the call (a bad one is a tool error naming it); what
the API refuses comes back as a tool error naming the field the API named. Long work (an ingest, a workflow, a
job) is submitted as a job and followed, with a progress notification each time its progress grows.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import quote

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from mlxf.job_view import describe_job, job_fraction
from mlxf.mcp_server.upstream import Upstream

MaxTokens = Annotated[int, Field(ge=1, le=4096, description="At most this many tokens generated.")]
Temperature = Annotated[float | None, Field(ge=0, le=2, description="Sampling temperature (default: the model's).")]
TopK = Annotated[int, Field(ge=1, le=50, description="How many chunks to retrieve.")]
Threshold = Annotated[
    float | None, Field(ge=-1, le=1, description="Least cosine similarity of a chunk (default 0.7 for rag_query).")
]
JobId = Annotated[str, Field(min_length=1, max_length=200, description="A job id (job-...).")]
Wait = Annotated[
    bool, Field(description="Follow the job until it has finished, with progress notifications, and return it then.")
]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(min_length=1)


def register_tools(server: MCPServer, upstream: Upstream) -> None:
    async def follow(ctx: Context, job_id: str) -> dict[str, Any]:
        """The job once finished; a progress notification each time its progress grew (the first one at once)."""
        states = upstream.platform().job_states(job_id)
        reported = -1.0
        job: dict[str, Any] = {}
        while (state := await upstream.call(next, states, None)) is not None:
            job = state
            if job_fraction(job) > reported:
                reported = job_fraction(job)
                await ctx.report_progress(reported, 1.0, f"{job_id}: {describe_job(job)}")
        return job

    async def finished_result(ctx: Context, accepted: dict[str, Any]) -> dict[str, Any]:
        job = await follow(ctx, accepted["job_id"])
        if job.get("status") != "completed":
            raise_job_error(job)
        return {"job_id": job["job_id"], **(job.get("result") or {})}

    @server.tool()
    async def chat(
        model: Annotated[str, Field(min_length=1, description="A loaded chat model id (see list_models).")],
        messages: Annotated[list[ChatMessage], Field(min_length=1, description="The conversation so far.")],
        max_tokens: MaxTokens = 256,
        temperature: Temperature = None,
        seed: int | None = None,
    ) -> dict[str, Any]:
        """Ask a chat model: its answer to the messages, with the finish reason and token usage."""
        body = {"model": model, "messages": [m.model_dump() for m in messages], "max_tokens": max_tokens}
        body.update({k: v for k, v in {"temperature": temperature, "seed": seed}.items() if v is not None})
        answer = await upstream.call(upstream.platform().post, "/v1/chat/completions", body)
        choice = answer["choices"][0]
        return {
            "model": answer["model"],
            "content": choice["message"].get("content"),
            "finish_reason": choice["finish_reason"],
            "usage": answer.get("usage"),
        }

    @server.tool()
    async def embed(
        model: Annotated[str, Field(min_length=1, description="An embeddings model id (see list_models).")],
        input: Annotated[list[str], Field(min_length=1, max_length=256, description="The texts to embed.")],
        dimensions: Annotated[
            int | None, Field(ge=1, description="Fewer dimensions, for a model that has them.")
        ] = None,
    ) -> dict[str, Any]:
        """Embed texts: one vector per text, in order."""
        body: dict[str, Any] = {"model": model, "input": input}
        if dimensions is not None:
            body["dimensions"] = dimensions
        answer = await upstream.call(upstream.platform().post, "/v1/embeddings", body)
        vectors = [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]
        return {
            "model": answer["model"],
            "dimensions": len(vectors[0]),
            "embeddings": vectors,
            "usage": answer["usage"],
        }

    @server.tool()
    async def rag_query(
        collection: Annotated[str, Field(min_length=1, description="The collection to answer from.")],
        query: Annotated[str, Field(min_length=1, max_length=8000, description="The question.")],
        top_k: TopK = 5,
        model: Annotated[
            str | None, Field(description="The chat model that answers (default: the platform's).")
        ] = None,
        similarity_threshold: Threshold = None,
        hybrid: Annotated[bool, Field(description="Vector and full-text retrieval, fused.")] = False,
        max_tokens: MaxTokens = 256,
    ) -> dict[str, Any]:
        """Answer a question from a collection's documents: the answer, citing numbered sources (file, page, score)."""
        body: dict[str, Any] = {"query": query, "collection": collection, "top_k": top_k}
        body.update(generation_config={"max_tokens": max_tokens}, retrieval_mode="hybrid" if hybrid else "vector")
        optional = {"model_id": model, "similarity_threshold": similarity_threshold}
        body.update({k: v for k, v in optional.items() if v is not None})
        renamed = {"model_id": "model", "generation_config.max_tokens": "max_tokens", "retrieval_mode": "hybrid"}
        answer = await upstream.call(upstream.platform().post, "/api/rag/query", body, renamed=renamed)
        return {
            "answer": answer["answer"],
            "sources": [source_view(source) for source in answer.get("sources", [])],
            "total_latency_ms": answer.get("total_latency_ms"),
        }

    @server.tool()
    async def rag_search(
        collection: Annotated[str, Field(min_length=1, description="The collection to search.")],
        query: Annotated[str, Field(min_length=1, max_length=8000, description="What to look for.")],
        top_k: TopK = 5,
        similarity_threshold: Threshold = None,
        hybrid: Annotated[bool, Field(description="Vector and full-text retrieval, fused.")] = False,
    ) -> dict[str, Any]:
        """Search a collection without generating: the most similar chunks with their file, page and score."""
        body: dict[str, Any] = {"query": query, "max_num_results": top_k, "ranking_options": {}}
        if similarity_threshold is not None:
            body["ranking_options"]["score_threshold"] = similarity_threshold
        if hybrid:
            body["ranking_options"]["hybrid_search"] = {}
        renamed = {
            "vector_store_id": "collection",
            "max_num_results": "top_k",
            "ranking_options": "similarity_threshold",
        }
        found = await upstream.call(
            upstream.platform().post, f"/v1/vector_stores/{quote(collection, safe='')}/search", body, renamed=renamed
        )
        return {
            "results": [
                {
                    "file": hit.get("filename"),
                    "page": (hit.get("attributes") or {}).get("page"),
                    "score": hit.get("score"),
                    "text": "".join(part.get("text", "") for part in hit.get("content", [])),
                }
                for hit in found.get("data", [])
            ]
        }

    @server.tool()
    async def rag_ingest_text(
        collection: Annotated[str, Field(min_length=1, description="The collection to add to (made if new).")],
        text: Annotated[str, Field(min_length=1, description="The document's text (Markdown is read as such).")],
        ctx: Context,
        name: Annotated[
            str, Field(min_length=1, max_length=200, pattern=r"\.(txt|md)$", description="Its file name.")
        ] = "document.txt",
        metadata: Annotated[dict[str, Any] | None, Field(description="Given to every chunk (filterable).")] = None,
    ) -> dict[str, Any]:
        """Add a text to a collection: chunked and embedded as a job, with progress notifications; the ingest's
        result (documents, chunks, document ids)."""
        form = {"collection": collection, "async": "true"}
        if metadata:
            form["metadata"] = json.dumps(metadata)
        accepted = await upstream.call(
            upstream.platform().post, "/api/rag/ingest", data=form, files=[("files", (name, text.encode()))]
        )
        return await finished_result(ctx, accepted)

    @server.tool()
    async def list_models(
        type: Annotated[str | None, Field(description="Only models of this type: lm, embeddings, rerank, ...")] = None,
    ) -> dict[str, Any]:
        """The platform's models: id, type, status (loaded, loading, available on demand, failed), memory, nodes."""
        listed = await upstream.call(upstream.platform().get, "/v1/models")
        return {"models": [model_view(m) for m in listed["data"] if type is None or m.get("type") == type]}

    @server.tool()
    async def run_workflow(
        workflow: Annotated[str, Field(min_length=1, description="A workflow id (see the workflows resource).")],
        input: Annotated[dict[str, Any], Field(description="The workflow's input, as its input schema says.")],
        ctx: Context,
        models: Annotated[dict[str, Any] | None, Field(description="Models for the workflow's roles.")] = None,
        config: Annotated[
            dict[str, Any] | None, Field(description="temperature, top_p, max_tokens, seed, top_k for every step.")
        ] = None,
    ) -> dict[str, Any]:
        """Run a fusion workflow as a job, with a progress notification as its steps finish; its result and the
        execution trace of every step."""
        body = {"workflow": workflow, "input": input, "models": models or {}, "config": config or {}, "async": True}
        accepted = await upstream.call(upstream.platform().post, "/api/fusion/orchestrate", body)
        return await finished_result(ctx, accepted)

    @server.tool()
    async def submit_job(
        model_id: Annotated[str, Field(min_length=1, description="The model that runs it.")],
        operation: Annotated[
            Literal["chat", "completion", "embed", "transcribe", "image_gen", "rag_query", "fusion"],
            Field(description="What the job does; input is that endpoint's body without model."),
        ],
        input: Annotated[dict[str, Any], Field(description="e.g. for chat: {messages, max_tokens}.")],
        ctx: Context,
        priority: Literal["high", "normal", "low"] = "normal",
        metadata: Annotated[dict[str, Any] | None, Field(description="Kept with the job.")] = None,
        wait: Wait = False,
    ) -> dict[str, Any]:
        """Submit a durable asynchronous job: its id and place in the queue, or with wait the finished job."""
        body = {"model_id": model_id, "operation": operation, "input": input, "priority": priority}
        if metadata:
            body["metadata"] = metadata
        accepted = await upstream.call(upstream.platform().post, "/api/mcp/jobs", body)
        return await follow(ctx, accepted["job_id"]) if wait else accepted

    @server.tool()
    async def get_job(job_id: JobId, ctx: Context, wait: Wait = False) -> dict[str, Any]:
        """A job: status, progress, result or error."""
        if wait:
            return await follow(ctx, job_id)
        return await upstream.call(upstream.platform().get, f"/api/mcp/jobs/{quote(job_id, safe='')}")

    @server.tool()
    async def cancel_job(job_id: JobId) -> dict[str, Any]:
        """Cancel a queued or running job (a finished one cannot be)."""
        return await upstream.call(upstream.platform().delete, f"/api/mcp/jobs/{quote(job_id, safe='')}")


def raise_job_error(job: dict[str, Any]) -> None:
    raise ToolError(f"job {job.get('job_id')} {job.get('status')}: {job.get('error') or job.get('error_code') or ''}")


def source_view(source: dict[str, Any]) -> dict[str, Any]:
    metadata = source.get("metadata") or {}
    return {
        "file": metadata.get("file"),
        "page": metadata.get("page"),
        "score": source.get("score"),
        "text": source["text"],
    }


def model_view(model: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "type", "status", "vram_usage_gb", "context_length", "nodes", "tags", "error")
    return {key: model.get(key) for key in keys}
