"""The backend MLX computes on here, and whether OpenBLAS is preloaded."""

from __future__ import annotations

import os
from typing import Any


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Device, Metal availability and MLX version as this process sees them."""
    import mlx.core as mx

    return {
        "device": str(mx.default_device()),
        "metal_available": bool(mx.metal.is_available()),
        "mlx_version": mx.__version__,
        "ld_preload": os.environ.get("LD_PRELOAD", ""),
    }
