"""One handler per model type behind one interface; ``load_handler`` picks the module the type table names."""

from __future__ import annotations

import importlib
from pathlib import Path

from config.model_types import SERVED_TYPES
from config.model_types import model_type as model_type_row
from models.handlers.base import ModelHandler, ServingLimits


def load_handler(
    model_type: str, path: Path, context_length: int | None = None, limits: ServingLimits | None = None
) -> ModelHandler:
    """Loads the model at ``path`` with the handler of ``model_type`` (imports mlx)."""
    row = model_type_row(model_type)
    if row is None or not row.served:
        raise ValueError(f"model type {model_type!r} has no handler yet (supported: {', '.join(SERVED_TYPES)})")
    module_name, _, function = row.handler.partition(":")
    load = getattr(importlib.import_module(f"{__name__}.{module_name}"), function or "load")
    return load(path, context_length=context_length, limits=limits or ServingLimits())
