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
THREAD_TIMEOUT = "20"
"""``OPENBLAS_THREAD_TIMEOUT``: OpenBLAS's threads spin 2**20 cycles (about 0.4 ms) after their last work before they
sleep, not its default 2**28 (about 0.1 s). Measured with SmolLM2-135M here: the default spins about 100 ms of CPU
after each health probe (the largest share of a worker's CPU at rest) and 20 about 0.5 ms, at the same tok/s alone
and batching 16 (``docs/benchmarks.md``, "The stack at rest")."""


def find_openblas(configured: str = "") -> str | None:
    for candidate in (configured, *OPENBLAS_CANDIDATES):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def preloaded_environment(environ: Mapping[str, str], configured: str = "") -> dict[str, str]:
    """``environ`` with OpenBLAS in ``LD_PRELOAD`` (on Linux, when installed) and marked as checked: a worker
    started with it does not re-execute itself (its imports take seconds). Its threads spin ``THREAD_TIMEOUT``
    unless ``OPENBLAS_THREAD_TIMEOUT`` is set."""
    env = dict(environ)
    if not sys.platform.startswith("linux") or env.get(_MARK):
        return env
    env[_MARK] = "1"
    env.setdefault("OPENBLAS_THREAD_TIMEOUT", THREAD_TIMEOUT)
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
