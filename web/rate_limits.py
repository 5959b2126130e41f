"""Rate limits per caller and API group (specification section 8), counted in Redis by Flask-Limiter so that every
web process shares them: per key when the API has keys (every ``API_KEYS`` key is the one admin), per client address
without; reads (``GET``, ``HEAD``) and writes are counted apart, each against the group's limit. Answers carry
``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset``; past a limit, 429 ``rate_limit_exceeded`` with
``Retry-After``.

Model management is the specification's own routes (load, unload, warm-up, info, stats); the OpenAI reads
``GET /v1/models[/{id}]`` are not limited, as OpenAI clients call them freely.
"""

from __future__ import annotations

from flask import Flask, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from config.settings import Settings

OPENAI_READS = ("models.ModelList", "models.ModelDetail")


def _not_model_management() -> bool:
    return request.endpoint in OPENAI_READS


def _job_read() -> bool:
    """A read of MCP jobs: limited by ``RATE_LIMIT_JOB_READS``, apart from submissions and webhooks."""
    return request.blueprint == "jobs" and request.method in ("GET", "HEAD")


def _not_job_read() -> bool:
    return not _job_read()


def caller_key() -> str:
    """The limits' bucket: the caller's key id, or the client address when the API has no keys."""
    caller = g.get("caller")
    if caller is not None and caller.owner not in (None, "anonymous"):
        return f"key:{caller.owner}"
    return get_remote_address()


def _read_or_write(group: str):
    def scope(_endpoint: str) -> str:
        return f"{group}:{'read' if request.method in ('GET', 'HEAD') else 'write'}"

    return scope


def register_rate_limits(app: Flask, settings: Settings, blueprints: dict[str, object]) -> Limiter | None:
    """Limits the blueprints of each group (``models``, ``fusion`` and ``capabilities``, ``rag``, ``jobs`` and
    ``webhooks``); none when ``RATE_LIMITS_ENABLED`` is off."""
    if not settings.rate_limits_enabled:
        return None
    limiter = Limiter(
        caller_key,
        app=app,
        storage_uri=settings.redis_url,
        headers_enabled=True,
        key_prefix="mlxf:ratelimit",
        strategy="moving-window",
    )
    groups = {
        "model_management": (settings.rate_limit_models, ("models", "adapters")),
        "fusion": (settings.rate_limit_fusion, ("fusion", "capabilities")),
        "rag": (settings.rate_limit_rag, ("rag",)),
        "mcp_jobs": (settings.rate_limit_jobs, ("jobs", "webhooks")),
    }
    exemptions = {"model_management": _not_model_management, "mcp_jobs": _job_read}
    for scope, (limit, names) in groups.items():
        shared = limiter.shared_limit(limit, scope=_read_or_write(scope), exempt_when=exemptions.get(scope))
        for name in names:
            shared(blueprints[name])
    limiter.shared_limit(settings.rate_limit_job_reads, scope="mcp_job_reads", exempt_when=_not_job_read)(
        blueprints["jobs"]
    )
    return limiter
