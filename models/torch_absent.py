"""PyTorch marked absent in a model worker whose model needs none.

A worker computes with MLX only, yet transformers imports torch whenever it is installed (mlx-lm loads its tokenizers
through transformers): 1.3 s of CPU and about 310 MB of resident memory in every worker (measured on SmolLM2).
``hide_torch`` puts ``None`` under ``torch`` in ``sys.modules``, Python's mark of a module that cannot be imported:
``importlib.util.find_spec`` answers None, which is how transformers asks, and ``import torch`` fails as if it were
not installed. It must run before anything imports transformers: ``tasks.model_worker`` calls it first when its
supervisor set ``WITHOUT_TORCH``, which it does for the model types with ``hides_torch`` (``config.model_types``).
transformers' advice that "PyTorch was not found" (its models unusable, which a worker never uses) is turned off
with ``TRANSFORMERS_NO_ADVISORY_WARNINGS``.
"""

from __future__ import annotations

import os
import sys

WITHOUT_TORCH = "MLXF_WITHOUT_TORCH"
"""Set to ``1`` in a worker's environment by its supervisor: the worker's model type needs no torch."""


def wanted() -> bool:
    """Whether this process was started to run without torch."""
    return os.environ.get(WITHOUT_TORCH) == "1"


def hide_torch() -> bool:
    """Marks torch absent unless it is already imported; whether it is now hidden."""
    if sys.modules.get("torch", None) is not None:
        return False
    sys.modules["torch"] = None  # type: ignore[assignment]
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    return True
