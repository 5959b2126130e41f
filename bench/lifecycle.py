"""Section 4: loading, warming up and unloading a model through the API, against doing it in-process; and how long
the first request to an on-demand model waits for its load."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psutil
import requests

from bench import progress
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL_DIR
from bench.inprocess import run_probe
from bench.report import SectionResult, Table
from bench.stack import ON_DEMAND_MODEL, PlatformStack
from bench.stats import median
from models.liveness import Liveness

NAME = "lifecycle"
TITLE = "Model lifecycle: load, warm up, unload"


def _timed(method: str, url: str, **kwargs: Any) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    response = requests.request(method, url, timeout=600, **kwargs)
    return response, time.perf_counter() - started


def worker_rss_mb(platform: PlatformStack, model_id: str) -> float | None:
    """Resident memory of the model's worker process, found by the pid in its heartbeat."""
    workers = Liveness(platform.redis, 6).workers(model_id)
    try:
        return psutil.Process(workers[0]["pid"]).memory_info().rss / 1e6 if workers else None
    except psutil.Error:
        return None


def api_cycle(platform: PlatformStack, index: int) -> dict[str, Any]:
    """Loads the prepared chat model under a new id, warms it, reads its memory, unloads it; times each call."""
    base = platform.base_url
    model_id = f"bench-lifecycle-{index}-{uuid.uuid4().hex[:6]}"
    body = {"model_path": str(CHAT_MODEL_DIR), "model_type": "lm", "model_id": model_id}
    loaded, load_s = _timed("POST", f"{base}/v1/models/load", json=body)
    if loaded.status_code != 200:
        raise RuntimeError(f"load answered {loaded.status_code}: {loaded.text[:300]}")
    try:
        warmed, warmup_s = _timed("POST", f"{base}/v1/models/{model_id}/warmup", json={"prompt": "Hello"})
        if warmed.status_code != 200:
            raise RuntimeError(f"warmup answered {warmed.status_code}: {warmed.text[:300]}")
        info = requests.get(f"{base}/v1/models/{model_id}/info", timeout=30).json()
        rss = worker_rss_mb(platform, model_id)
        unloaded, unload_s = _timed("DELETE", f"{base}/v1/models/{model_id}/unload")
        if unloaded.status_code != 200:
            raise RuntimeError(f"unload answered {unloaded.status_code}: {unloaded.text[:300]}")
    except Exception:
        requests.delete(f"{base}/v1/models/{model_id}/unload", params={"force": "true"}, timeout=120)
        raise
    gone = requests.get(f"{base}/v1/models/{model_id}", timeout=30).status_code == 404
    return {
        "model_id": model_id,
        "load_s": load_s,
        "warmup_s": warmup_s,
        "warmup_time_ms": warmed.json().get("warmup_time_ms"),
        "unload_s": unload_s,
        "memory_mb": info.get("vram_usage_gb", 0) * 1000,
        "worker_rss_mb": rss,
        "gone_after_unload": gone,
    }


def on_demand_cycle(platform: PlatformStack) -> dict[str, Any]:
    """The first request to the on-demand model (it loads the model, then answers), a second one (warm), then
    an unload so that the next cycle starts cold again."""
    base = platform.base_url
    body = {"model": ON_DEMAND_MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    first, first_s = _timed("POST", f"{base}/v1/chat/completions", json=body)
    if first.status_code != 200:
        raise RuntimeError(f"the first request answered {first.status_code}: {first.text[:300]}")
    second, second_s = _timed("POST", f"{base}/v1/chat/completions", json=body)
    if second.status_code != 200:
        raise RuntimeError(f"the second request answered {second.status_code}: {second.text[:300]}")
    requests.delete(f"{base}/v1/models/{ON_DEMAND_MODEL}/unload", timeout=120)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if requests.get(f"{base}/v1/models/{ON_DEMAND_MODEL}", timeout=30).json().get("status") == "available":
            break
        time.sleep(0.2)
    return {"first_s": first_s, "second_s": second_s}


def run(context: BenchContext) -> SectionResult:
    """In-process load/warm-up/unload first, then the same through the API, ``lifecycle_runs`` times each."""
    runs = context.options.lifecycle_runs
    platform = context.platform()
    progress.say("in-process: the worker's handler, OpenBLAS preloaded")
    local = run_probe("lifecycle", {"path": str(CHAT_MODEL_DIR), "runs": runs}, openblas=True)
    api = []
    for index in range(runs):
        api.append(api_cycle(platform, index))
        progress.say(f"API run {index + 1}/{runs}: load {api[-1]['load_s']:.1f}s, unload {api[-1]['unload_s']:.1f}s")
    on_demand = []
    for index in range(runs):
        on_demand.append(on_demand_cycle(platform))
        progress.say(f"on-demand run {index + 1}/{runs}: first request {on_demand[-1]['first_s']:.1f}s")
    result = SectionResult(NAME, TITLE)
    waits = Table(
        f"A request naming the on-demand model {ON_DEMAND_MODEL} (8 tokens), median of {runs} run(s)",
        ["request", "end-to-end s"],
    )
    waits.rows.append(["first (loads the model, then answers)", median([r["first_s"] for r in on_demand])])
    waits.rows.append(["second (the model is warm)", median([r["second_s"] for r in on_demand])])
    table = Table(
        f"{CHAT_MODEL_DIR.name} (prepared folder), median of {runs} run(s)",
        ["path", "load s", "warm-up s", "unload s", "MLX active memory MB", "process RSS MB"],
    )
    table.rows.append(
        [
            "in-process (mlx_lm.load + warm-up)",
            median([r["load_s"] for r in local["runs"]]),
            median([r["warmup_s"] for r in local["runs"]]),
            median([r["unload_s"] for r in local["runs"]]),
            median([r["active_memory_mb"] for r in local["runs"]]),
            median([r["rss_mb"] for r in local["runs"]]),
        ]
    )
    table.rows.append(
        [
            "API (POST load, POST warmup, DELETE unload)",
            median([r["load_s"] for r in api]),
            median([r["warmup_s"] for r in api]),
            median([r["unload_s"] for r in api]),
            median([r["memory_mb"] for r in api]),
            median([r["worker_rss_mb"] for r in api if r["worker_rss_mb"] is not None]),
        ]
    )
    result.tables.append(table)
    result.tables.append(waits)
    result.notes += [
        f"in-process imports (mlx, mlx-lm, the handler) took {local['import_s']:.1f}s once, not counted in load",
        "the API's load includes starting a worker process (imports, Celery), loading, the worker's own warm-up "
        "and recording it in the registry; its memory is the worker's MLX active memory after warm-up "
        "(GET /v1/models/{id}/info), RSS is the whole worker process",
        f"model id answered 404 after unload: {'yes' if all(r['gone_after_unload'] for r in api) else 'no'}",
    ]
    result.raw = {"in_process": local, "api": api, "on_demand": on_demand}
    return result
