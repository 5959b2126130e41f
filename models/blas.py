"""Preloads OpenBLAS into a model worker on Linux: the mlx-cpu wheel's bundled reference BLAS is ~60x slower.

``LD_PRELOAD`` only takes effect at process start, so the worker re-executes
itself once with it set.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
)
_MARK = "MLXF_BLAS_CHECKED"


def find_openblas(configured: str = "") -> str | None:
    for candidate in (configured, *OPENBLAS_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def preloaded_environment(environ: Mapping[str, str], configured: str = "") -> dict[str, str]:
    """``environ`` with OpenBLAS in ``LD_PRELOAD`` (on Linux, when installed) and marked as checked: a worker
    started with it does not re-execute itself (its imports take seconds)."""
    env = dict(environ)
    if not sys.platform.startswith("linux") or env.get(_MARK):
        return env
    env[_MARK] = "1"
    library = find_openblas(configured)
    if library is not None and library not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = ":".join(filter(None, [library, env.get("LD_PRELOAD", "")]))
    return env


def reexec_with_openblas(configured: str = "") -> None:
    """On Linux, restarts this process with OpenBLAS preloaded unless it already is (or none is installed)."""
    if not sys.platform.startswith("linux") or os.environ.get(_MARK):
        return
    env = preloaded_environment(os.environ, configured)
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        if find_openblas(configured) is None:
            log.warning("OpenBLAS not found: float32 matmuls use the slow reference BLAS of the mlx-cpu wheel")
        os.environ[_MARK] = "1"
        return
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
