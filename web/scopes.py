"""The scope each route needs, by Flask endpoint and method: the one table of who may do what.

A key with ``admin`` may do everything; ``read`` may call every ``GET`` below that does not need ``admin``. A route
of a blueprint not in the table yet takes its blueprint's scope (``BLUEPRINT_SCOPES``), anything else ``admin``:
a forgotten route is closed, never open. ``tests/unit/test_route_scopes.py`` checks that every route is here.
"""

from __future__ import annotations

from web.identity import Caller

ROUTE_SCOPES: dict[str, dict[str, str]] = {
    # OpenAI and Anthropic inference
    "chat.ChatCompletions": {"POST": "inference"},
    "completions.Completions": {"POST": "inference"},
    "messages.Messages": {"POST": "inference"},
    "messages.CountTokens": {"POST": "inference"},
    "embeddings.Embeddings": {"POST": "inference"},
    "tokenize.Tokenize": {"POST": "inference"},
    "tokenize.Detokenize": {"POST": "inference"},
    "rerank.Rerank": {"POST": "inference"},
    "rerank.Score": {"POST": "inference"},
    "audio.Transcriptions": {"POST": "inference"},
    "images.ImageGenerations": {"POST": "inference"},
    "images.ImageEdits": {"POST": "inference"},
    "responses.Responses": {"POST": "inference"},
    "responses.StoredResponse": {"GET": "inference", "DELETE": "inference"},
    # Models: reading them is inference's (OpenAI clients list models); changing them is admin's
    "models.ModelList": {"GET": "inference"},
    "models.ModelDetail": {"GET": "inference"},
    "models.ModelInfo": {"GET": "inference"},
    "models.ModelStatistics": {"GET": "inference"},
    "health.QueueStats": {"GET": "inference"},
    "models.ModelLoad": {"POST": "admin"},
    "models.ModelUnload": {"DELETE": "admin"},
    "models.ModelWarmup": {"POST": "admin"},
    "adapters.Adapters": {"GET": "inference", "POST": "admin"},
    "adapters.OneAdapter": {"DELETE": "admin"},
    # Fusion: running a workflow is model calls (inference); composing and deleting one is admin's
    "capabilities.Capabilities": {"GET": "inference"},
    "fusion.Workflows": {"GET": "inference"},
    "fusion.OneWorkflow": {"GET": "inference", "DELETE": "admin"},
    "fusion.Orchestrate": {"POST": "inference"},
    "fusion.Compose": {"POST": "admin"},
    # MCP jobs and webhooks
    "jobs.Jobs": {"GET": "jobs", "POST": "jobs"},
    "jobs.JobDetail": {"GET": "jobs", "DELETE": "jobs"},
    "jobs.JobEvents": {"GET": "jobs"},
    "webhooks.Webhooks": {"GET": "jobs", "POST": "jobs"},
    "webhooks.WebhookDetail": {"GET": "jobs", "DELETE": "jobs"},
    "webhooks.WebhookDeliveries": {"GET": "jobs"},
    # RAG
    "rag.Collections": {"GET": "rag"},
    "rag.Collection": {"GET": "rag", "DELETE": "rag"},
    "rag.Document": {"DELETE": "rag"},
    "rag.Ingest": {"POST": "rag"},
    "rag.Query": {"POST": "rag"},
    # OpenAI's vector stores: RAG collections (a key attaching files also needs batches to upload them)
    "vector_stores.VectorStores": {"GET": "rag", "POST": "rag"},
    "vector_stores.OneVectorStore": {"GET": "rag", "DELETE": "rag"},
    "vector_stores.VectorStoreFiles": {"GET": "rag", "POST": "rag"},
    "vector_stores.OneVectorStoreFile": {"GET": "rag", "DELETE": "rag"},
    "vector_stores.VectorStoreSearch": {"POST": "rag"},
    # OpenAI's Files and Batch APIs
    "files.Files": {"GET": "batches", "POST": "batches"},
    "files.OneFile": {"GET": "batches", "DELETE": "batches"},
    "files.FileContent": {"GET": "batches"},
    "batches.Batches": {"GET": "batches", "POST": "batches"},
    "batches.OneBatch": {"GET": "batches"},
    "batches.BatchCancel": {"POST": "batches"},
    # Operators
    "diagnostics.Diagnostics": {"GET": "admin"},
    "admin.Keys": {"GET": "admin", "POST": "admin"},
    "admin.OneKey": {"DELETE": "admin"},
    "admin.KeyRotation": {"POST": "admin"},
    "admin.Usage": {"GET": "admin"},
    "admin.Audit": {"GET": "admin"},
}

BLUEPRINT_SCOPES = {"batches": "batches", "files": "batches", "rerank": "inference", "admin": "admin"}
"""The scope of a route of these blueprints not in the table."""

PUBLIC_ENDPOINTS = frozenset(
    {
        "health.Health",
        "metrics.Metrics",
        "image_files.ImageFile",
        "api-docs.openapi_json",
        "swagger_ui.show",
        "static",
        "console.page",
        "console.static",
    }
)
"""Routes that need no scope: probes, metrics (each may require a key by setting), the API document and page,
the console's page and files (it calls the API with the key it asks for), and generated images (their URL carries
an unguessable token)."""

READ_METHODS = ("GET", "HEAD")


def scope_for(endpoint: str | None, method: str) -> str | None:
    """The scope a request needs, or ``None`` for a public route or a path no route matches (404/405)."""
    if endpoint is None or endpoint in PUBLIC_ENDPOINTS:
        return None
    method = "GET" if method == "HEAD" else method
    methods = ROUTE_SCOPES.get(endpoint)
    if methods is not None:
        return methods.get(method, "admin" if method != "OPTIONS" else None)
    return BLUEPRINT_SCOPES.get(endpoint.split(".", 1)[0], "admin")


def allowed(caller: Caller, scope: str | None, method: str) -> bool:
    if scope is None or caller.may(scope):
        return True
    return method in READ_METHODS and scope != "admin" and "read" in caller.scopes


def table() -> list[tuple[str, str, str]]:
    """``(endpoint, method, scope)`` rows, for the documentation."""
    return [
        (endpoint, method, scope) for endpoint, methods in ROUTE_SCOPES.items() for method, scope in methods.items()
    ]
