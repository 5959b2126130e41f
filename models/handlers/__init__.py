"""One handler per model type behind one interface; ``load_handler`` picks the module by type."""

from __future__ import annotations

import importlib
from pathlib import Path

from models.handlers.base import ModelHandler

_HANDLER_MODULES = {
    "lm": "models.handlers.lm",
    "embeddings": "models.handlers.embeddings",
}
MODEL_TYPES = ("lm", "multimodal", "embeddings", "whisper", "image-generation", "image-edit")


def load_handler(model_type: str, path: Path, context_length: int | None = None) -> ModelHandler:
    """Loads the model at ``path`` with the handler of ``model_type`` (imports mlx)."""
    if model_type not in _HANDLER_MODULES:
        supported = ", ".join(sorted(_HANDLER_MODULES))
        raise ValueError(f"model type {model_type!r} has no handler yet (supported: {supported})")
    module = importlib.import_module(_HANDLER_MODULES[model_type])
    return module.load(path, context_length=context_length)
