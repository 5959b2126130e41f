"""Reads the engine's own time per request from the model workers' log lines, found by request ID."""

from __future__ import annotations

import re
from pathlib import Path

_FINISHED = re.compile(r"\[request_id=(?P<request_id>[^\]]+)\] (?P<operation>\w+) finished in (?P<ms>\d+) ms")


def engine_seconds(log_path: Path) -> dict[str, float]:
    """Request ID -> seconds the engine spent on it (``models/engine.py``'s "finished in N ms" line)."""
    if not log_path.exists():
        return {}
    return {
        match["request_id"]: int(match["ms"]) / 1000
        for match in _FINISHED.finditer(log_path.read_text(errors="replace"))
    }
