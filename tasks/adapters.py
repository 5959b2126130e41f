"""LoRA adapters of a served language model: recorded in the registry, loaded by its workers, named by requests
as ``<model id>:<adapter id>``.

The registry is what is true: a worker that has not loaded an adapter a request names (a replica, a restarted
worker) loads it from the recorded source before the request joins the batch (``ensure_loaded``).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.errors import ApiError
from config.model_types import COUNT_TOKENS, DETOKENIZE, LOAD_ADAPTER, TOKENIZE, UNLOAD_ADAPTER
from config.settings import Settings
from models import hub, registry

if TYPE_CHECKING:
    from tasks.dispatch import Dispatcher

ADAPTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SEPARATOR = ":"
ADAPTED_OPERATIONS = ("chat", "completion")
"""What an adapter changes; the tokenizer's operations are the base model's own (an adapter keeps its tokenizer)."""
TOKENIZER_OPERATIONS = (TOKENIZE, DETOKENIZE, COUNT_TOKENS)


def adapter_source(settings: Settings, adapter_path: str) -> str:
    """What ``adapter_path`` names: a folder under the model roots holding an mlx-lm adapter, or a Hugging Face repo
    id (``hf://<repo id>``, fetched through the Hub cache by the worker); a 400 naming ``adapter_path`` otherwise."""
    try:
        candidate = Path(adapter_path).expanduser()
        resolved = candidate.resolve()
    except (RuntimeError, ValueError, OSError) as exc:
        message = f"adapter_path is not a usable path: {exc}"
        raise ApiError(400, message, code="invalid_value", param="adapter_path") from None
    allowed = any(resolved == root or root in resolved.parents for root in settings.allowed_model_roots)
    if not (allowed and resolved.exists()) and not candidate.is_absolute() and hub.is_repo_id(adapter_path):
        return hub.HUB_PREFIX + adapter_path
    if not allowed:
        roots = ", ".join(str(root) for root in settings.allowed_model_roots)
        raise ApiError(
            400,
            f"adapter_path must be a Hugging Face repo id or a folder under {roots}",
            code="invalid_adapter_path",
            param="adapter_path",
        )
    missing = [name for name in ("adapter_config.json", "adapters.safetensors") if not (resolved / name).is_file()]
    if missing:
        raise ApiError(
            400,
            f"{adapter_path} is not an mlx-lm adapter folder (no {' or '.join(missing)})",
            code="invalid_adapter_path",
            param="adapter_path",
        )
    return str(resolved)


def _language_model(model_id: str) -> registry.ModelRecord:
    record = registry.get_record(model_id)
    if record is None:
        raise ApiError(404, f"Model '{model_id}' not found", code="model_not_found", param="model_id")
    if record.model_type != "lm":
        raise ApiError(
            400,
            f"Model '{model_id}' is a {record.model_type} model; LoRA adapters apply to language models (lm)",
            code="unsupported_operation",
            param="model_id",
        )
    return record


def describe(model_id: str, adapter: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"{model_id}{SEPARATOR}{adapter['adapter_id']}",
        "object": "adapter",
        "adapter_id": adapter["adapter_id"],
        "parent": model_id,
        "source": adapter["source"],
        "rank": adapter.get("rank"),
        "layers": adapter.get("layers"),
        "memory_bytes": adapter.get("memory_bytes", 0),
        "created": adapter.get("created", 0),
    }


def listed(model_id: str) -> list[dict[str, Any]]:
    record = _language_model(model_id)
    return [describe(model_id, adapter) for adapter in record.adapters or []]


def register(
    dispatcher: Dispatcher, model_id: str, adapter_id: str, adapter_path: str, request_id: str
) -> dict[str, Any]:
    """Loads the adapter on a worker of the model (a 400 there for one that does not fit it), then records it."""
    record = _language_model(model_id)
    if registry.adapter_of(record, adapter_id) is not None:
        raise ApiError(
            409, f"Model '{model_id}' has an adapter '{adapter_id}' already", code="adapter_exists", param="adapter_id"
        )
    source = adapter_source(dispatcher.settings, adapter_path)
    call = dispatcher.start(model_id, LOAD_ADAPTER, {"adapter_id": adapter_id, "source": source}, request_id)
    loaded = dispatcher.result(call)
    entry = {
        "adapter_id": adapter_id,
        "source": source,
        "rank": loaded["rank"],
        "layers": loaded["layers"],
        "memory_bytes": loaded["memory_bytes"],
        "created": int(time.time()),
    }
    if not registry.add_adapter(model_id, entry):
        raise ApiError(
            409, f"Model '{model_id}' has an adapter '{adapter_id}' already", code="adapter_exists", param="adapter_id"
        )
    return describe(model_id, entry)


def unregister(dispatcher: Dispatcher, model_id: str, adapter_id: str, request_id: str) -> dict[str, Any]:
    """Forgets the adapter (new requests naming it get a 404) and has a worker drop it; requests running with it
    finish with it."""
    _language_model(model_id)
    if not registry.remove_adapter(model_id, adapter_id):
        raise ApiError(
            404, f"Model '{model_id}' has no adapter '{adapter_id}'", code="adapter_not_found", param="adapter_id"
        )
    if dispatcher.liveness.workers(model_id):
        dispatcher.result(dispatcher.start(model_id, UNLOAD_ADAPTER, {"adapter_id": adapter_id}, request_id))
    return {"id": f"{model_id}{SEPARATOR}{adapter_id}", "object": "adapter", "deleted": True}


def route(model_id: str, operation: str, payload: dict[str, Any], known: bool) -> tuple[str, dict[str, Any]]:
    """The model and payload a request for ``model_id`` goes to: ``<base>:<adapter>`` goes to the base model with
    the adapter in its payload; anything else (``known``: a model of that very id exists) as it is."""
    if known or SEPARATOR not in model_id:
        return model_id, payload
    base, adapter_id = model_id.rsplit(SEPARATOR, 1)
    record = registry.get_record(base)
    if record is None:
        return model_id, payload
    adapter = registry.adapter_of(record, adapter_id)
    if adapter is None:
        raise ApiError(404, f"Model '{base}' has no adapter '{adapter_id}'", code="adapter_not_found", param="model")
    if operation in TOKENIZER_OPERATIONS:
        return base, payload
    if operation not in ADAPTED_OPERATIONS:
        raise ApiError(
            400,
            f"A LoRA adapter applies to chat and completions, not to {operation}",
            code="invalid_value",
            param="model",
        )
    return base, {**payload, "adapter": adapter_id, "adapter_source": adapter["source"]}
