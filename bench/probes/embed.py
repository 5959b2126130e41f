"""The worker's own embeddings handler called directly on a batch of texts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import progress


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"path", "texts", "batch_sizes", "runs"}``: per batch size, seconds to embed all texts, per run."""
    from models.handlers.embeddings import load

    handler = load(Path(spec["path"]))
    handler.warmup()
    texts = spec["texts"]
    seconds: dict[str, list[float]] = {}
    for batch_size in spec["batch_sizes"]:
        handler.embed(texts[:batch_size])
        seconds[str(batch_size)] = []
        for index in range(spec["runs"]):
            started = time.perf_counter()
            for start in range(0, len(texts), batch_size):
                handler.embed(texts[start : start + batch_size])
            seconds[str(batch_size)].append(time.perf_counter() - started)
            progress.say(
                f"in-process batch {batch_size} run {index + 1}/{spec['runs']}: {seconds[str(batch_size)][-1]:.2f}s"
            )
    return {"seconds": seconds}
