"""Converts the chat model's GGUF into each weights format under the bench cache, with the project's converter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench import progress
from models.gguf import convert_gguf

MARKER = "bench-prepared.json"


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"gguf", "out_dir", "formats"}``: makes ``out_dir/<format>`` for each format missing or stale."""
    gguf = Path(spec["gguf"])
    stat = gguf.stat()
    folders = {}
    for weights_format in spec["formats"]:
        target = Path(spec["out_dir"]) / weights_format
        expected = {"source": str(gguf), "size": stat.st_size, "mtime": int(stat.st_mtime), "format": weights_format}
        marker = target / MARKER
        if not (marker.exists() and json.loads(marker.read_text()) == expected):
            staging = target.with_name(target.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            convert_gguf(
                gguf, staging, weights_format, progress=lambda step, f=weights_format: progress.say(f"{f}: {step}")
            )
            (staging / MARKER).write_text(json.dumps(expected))
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        folders[weights_format] = str(target)
    return {"folders": folders}
