"""Loading, warming and dropping the chat model in-process, with the memory it holds."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

from bench import progress


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """``{"path", "runs"}``: import time once, then per run load, warm-up, memory and unload times."""
    import psutil

    started = time.perf_counter()
    import mlx.core as mx

    from models.handlers.lm import load

    import_seconds = time.perf_counter() - started
    process = psutil.Process()
    runs = []
    for index in range(spec["runs"]):
        rss_before = process.memory_info().rss
        started = time.perf_counter()
        handler = load(Path(spec["path"]))
        loaded = time.perf_counter()
        handler.warmup()
        warmed = time.perf_counter()
        active = mx.get_active_memory()
        rss = process.memory_info().rss
        del handler
        gc.collect()
        mx.clear_cache()
        unloaded = time.perf_counter()
        runs.append(
            {
                "load_s": loaded - started,
                "warmup_s": warmed - loaded,
                "unload_s": unloaded - warmed,
                "active_memory_mb": active / 1e6,
                "rss_added_mb": (rss - rss_before) / 1e6,
                "rss_mb": rss / 1e6,
                "active_after_unload_mb": mx.get_active_memory() / 1e6,
            }
        )
        progress.say(f"in-process run {index + 1}/{spec['runs']}: load {loaded - started:.2f}s")
    return {"import_s": import_seconds, "runs": runs}
