"""Runs a probe (``bench.probes``) in a child process, with or without OpenBLAS preloaded, and returns its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.defaults import ROOT, openblas_library


class ProbeError(RuntimeError):
    """The probe's process failed; its own error is on stderr above."""


def run_probe(kind: str, spec: dict[str, Any], openblas: bool = True, timeout: float = 3600) -> dict[str, Any]:
    """``python -m bench.probes KIND``; ``openblas`` preloads OpenBLAS, as the platform's model workers do."""
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    if openblas:
        library = openblas_library()
        if library is None:
            raise ProbeError("OpenBLAS is not installed (libopenblas0-pthread)")
        env["LD_PRELOAD"] = library
    with tempfile.TemporaryDirectory(prefix="mlxf-bench-") as scratch:
        out = Path(scratch) / "result.json"
        completed = subprocess.run(
            [sys.executable, "-m", "bench.probes", kind, json.dumps(spec), str(out)],
            cwd=ROOT,
            env=env,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0 or not out.exists():
            raise ProbeError(f"the {kind} probe exited with {completed.returncode}")
        return json.loads(out.read_text())
