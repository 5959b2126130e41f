"""PyTorch marked absent in a model worker whose model needs none.

A worker computes with MLX only, yet transformers imports torch whenever it is installed (mlx-lm loads its tokenizers
through transformers): 1.3 s of CPU and about 310 MB of resident memory in every worker (measured on SmolLM2).
``hide_torch`` puts ``None`` under ``torch`` in ``sys.modules``, Python's mark of a module that cannot be imported:
``importlib.util.find_spec`` answers None, which is how transformers asks, and ``import torch`` fails as if it were
not installed. It must run before anything imports transformers: ``tasks.model_worker`` calls it first when
``wanted`` says so: its supervisor sets ``WITHOUT_TORCH`` to ``1`` for the model types with ``hides_torch``
(``config.model_types``) and to ``0`` for the others; a worker started by hand, without it, looks its model up in
the catalog file (no MongoDB read: a worker reaches MongoDB only after its imports, ``tasks.model_worker``).
transformers' advice that "PyTorch was not found" (its models unusable, which a worker never uses) is turned off
with ``TRANSFORMERS_NO_ADVISORY_WARNINGS``.
"""

from __future__ import annotations

import os
import sys

from config.model_types import model_type
from config.settings import Settings
from models.catalog import load_catalog

WITHOUT_TORCH = "MLXF_WITHOUT_TORCH"
"""Set in a worker's environment by its supervisor: ``1`` when the worker's model type needs no torch, else ``0``."""


def wanted(settings: Settings, model_id: str) -> bool:
    """Whether the worker of ``model_id`` runs without torch: as its supervisor said, else as its catalog entry's type
    says (a model outside the catalog keeps torch)."""
    said = os.environ.get(WITHOUT_TORCH)
    if said is not None:
        return said == "1"
    spec = load_catalog(settings).get(model_id)
    row = model_type(spec.model_type) if spec is not None else None
    return row is not None and row.hides_torch


def hide_torch() -> bool:
    """Marks torch absent unless it is already imported; whether it is now hidden."""
    if sys.modules.get("torch", None) is not None:
        return False
    sys.modules["torch"] = None  # type: ignore[assignment]
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    return True
