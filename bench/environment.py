"""The machine, backend, versions, model and settings a benchmark ran with, stated in every result."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

import psutil

from bench.defaults import CHAT_MODEL, CHAT_MODEL_DIR, openblas_library
from bench.inprocess import ProbeError, run_probe
from config.settings import Settings

_PACKAGES = ("mlx", "mlx-cpu", "mlx-lm", "mlx-embeddings", "mlx-metal", "celery", "redis", "gunicorn", "openai")


def cpu_model() -> str:
    """The processor's name, from /proc/cpuinfo on Linux."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that decide the figures."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def backend() -> str:
    """The device MLX computes on, and the BLAS preloaded into model workers."""
    try:
        info = run_probe("info", {}, openblas=openblas_library() is not None, timeout=300)
    except ProbeError as exc:
        return f"unknown ({exc})"
    blas = f"OpenBLAS preloaded ({info['ld_preload']})" if info["ld_preload"] else "MLX's bundled BLAS"
    metal = "Metal" if info["metal_available"] else "no Metal"
    return f"MLX {info['mlx_version']} on {info['device']} ({metal}); {blas}"


def chat_model() -> dict[str, Any]:
    """The default chat model's id, served folder and the weights format it was prepared in."""
    marker = CHAT_MODEL_DIR / "prepared.json"
    prepared = json.loads(marker.read_text()) if marker.exists() else {}
    return {
        "id": CHAT_MODEL,
        "folder": str(CHAT_MODEL_DIR),
        "weights_format": prepared.get("weights", "?"),
        "source": Path(prepared.get("source", "?")).name,
    }


def describe(stack_env: dict[str, str]) -> dict[str, Any]:
    """Everything above plus the settings of the platform under test (``stack_env`` over the environment)."""
    settings = Settings.from_env({**os.environ, **stack_env})
    return {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "os": f"{platform.system()} {platform.release()}",
        },
        "backend": backend(),
        "versions": versions(),
        "model": chat_model(),
        "settings": {
            "MAX_CONCURRENCY": settings.max_concurrency,
            "WEB_THREADS": settings.web_threads,
            "MLX_WARMUP": settings.mlx_warmup,
            "LOG_LEVEL": settings.log_level,
            "OPENBLAS": openblas_library() or "none",
        },
    }
