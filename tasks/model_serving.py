"""What a model worker runs once it knows its model: load it into an engine, then serve the model's Celery queue
while a thread beats into Redis (liveness, job leases) and another sends the health probes.

Imported by ``tasks.model_worker`` only after it has decided whether PyTorch stays visible (``models.torch_absent``):
mlx-lm, and through it transformers, come with this module.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from config.redis_client import connect_redis
from config.settings import Settings
from models import registry
from models.catalog import slug
from models.engine import Engine
from models.handlers import load_handler
from models.handlers.base import ServingLimits
from models.liveness import Liveness, probe_queue
from tasks import inference, job_store, jobs, probes, request_ids  # noqa: F401 - importing them registers the tasks
from tasks.celery_app import create_celery, model_queue
from tasks.redis_relay import RedisRelay
from tasks.serving import Runtime, install

log = logging.getLogger("tasks.model_worker")
_PROCESS = psutil.Process()
"""This worker process: its resident memory goes into every heartbeat (``/v1/models/{id}/stats``, ``/metrics``)."""


def engine_report(runtime: Runtime) -> dict[str, Any]:
    """What the heartbeat says of the worker, engine progress included: a hung engine shows as ``stalled``."""
    engine = runtime.engine
    stalled_for = engine.stalled_seconds()
    return {
        "model_type": runtime.model_type,
        "status": "loaded",
        "warmup_completed": engine.warmup_completed,
        "active": engine.active,
        "queued": engine.queued,
        "served": engine.served,
        "batch_size": engine.batch_active,
        "max_concurrency": runtime.batch_size,
        "batch_peak": engine.batch_peak,
        "preemptions": engine.preemptions,
        "draft_tokens": engine.draft_tokens[0],
        "draft_tokens_accepted": engine.draft_tokens[1],
        "kv_bytes_per_token": getattr(getattr(engine.handler, "batch", None), "kv_bytes_per_token", 0),
        "memory_bytes": engine.memory_bytes + getattr(getattr(engine.handler, "adapters", None), "nbytes", 0),
        "rss_bytes": _PROCESS.memory_info().rss,
        "pid": os.getpid(),
        "node": runtime.settings.node,
        "stalled_seconds": round(stalled_for, 1),
        "stalled": stalled_for > runtime.settings.engine_stall_seconds,
        "started_at": runtime.started_at,
        "answered_at": engine.answered_at,
        **runtime.probe.report(),
    }


EVENT_HEARTBEAT_SECONDS = 10
"""How often the worker's Celery event heartbeat tells Flower it is online (Celery's default, 2 s, costs every worker
and Flower a wake-up for nothing at rest; the platform's own liveness is the Redis beat of ``models.liveness``)."""

KV_SHARE_OF_AVAILABLE = 0.5
"""The most of the memory available at start a worker's KV cache may take, whatever ``ENGINE_KV_BUDGET_GB`` says."""


def kv_budget_bytes(settings: Settings) -> int:
    """``ENGINE_KV_BUDGET_GB``, at most half the memory available now: a request whose cache would not fit is
    refused with 503 ``insufficient_vram`` before anything is allocated. (On MLX's CPU backend an allocation that
    fails is a segmentation fault, not an exception: there is nothing to catch afterwards.)"""
    configured = int(settings.engine_kv_budget_gb * 1e9)
    available = int(psutil.virtual_memory().available * KV_SHARE_OF_AVAILABLE)
    if available < configured:
        log.warning("the KV budget is %.2f GB (half the memory available), not %.2f", available / 1e9, configured / 1e9)
    return min(configured, available)


def renew_leases(runtime: Runtime) -> None:
    for job_id, token in runtime.running_jobs():
        if not job_store.renew_lease(job_id, token, runtime.settings.job_lease_seconds):
            log.info("job %s is no longer this worker's; its lease is not renewed", job_id)


def _beat_until_stopped(
    runtime: Runtime,
    liveness: Liveness,
    wake: threading.Event,
    stop: threading.Event,
    supervisor_pid: int | None = None,
) -> None:
    """Beats into Redis, and renews the leases of this worker's jobs while its engine is not stalled. A worker
    whose supervisor is gone (killed: it is then started again, with new workers) shuts down."""
    renew_every = runtime.settings.job_lease_seconds / 3
    renewed_at = 0.0
    while not stop.is_set():
        if supervisor_pid is not None and os.getppid() != supervisor_pid:
            log.error("the supervisor (pid %d) is gone; this worker shuts down", supervisor_pid)
            os.kill(os.getpid(), signal.SIGTERM)
            supervisor_pid = None
        report = engine_report(runtime)
        try:
            liveness.beat(runtime.model_id, runtime.hostname, report)
        except redis.RedisError as exc:
            log.warning("heartbeat failed: %s", exc)
        if report["stalled"]:
            log.warning("the engine has made no progress for %.0fs", report["stalled_seconds"])
        elif time.monotonic() - renewed_at >= renew_every:
            try:
                renew_leases(runtime)
                renewed_at = time.monotonic()
            except Exception:  # noqa: BLE001 - MongoDB briefly away: try again at the next beat
                log.warning("could not renew job leases", exc_info=True)
        wake.wait(min(runtime.settings.worker_heartbeat_seconds, renew_every))
        wake.clear()


def load_engine(settings: Settings, record: registry.ModelRecord, path: Path) -> Engine:
    """The model at ``path`` loaded into a started engine (warmed up); raises what the load raised."""
    model_id, model_type = record.model_id, record.model_type
    batch_size = record.max_concurrency or settings.max_concurrency
    log.info("loading %s (%s) from %s; it batches up to %d requests", model_id, model_type, path, batch_size)
    limits = ServingLimits(
        max_sequences=batch_size,
        kv_budget_bytes=kv_budget_bytes(settings),
        prompt_cache_entries=settings.prompt_cache_entries,
        prompt_cache_bytes=int(settings.prompt_cache_gb * 1e9),
        prefill_step_size=settings.prefill_step_size,
        background_rows_beside_interactive=settings.background_rows_beside_interactive,
        draft_tokens=settings.speculative_draft_tokens,
        prompt_cache_disk_folder=settings.prompt_cache_folder / slug(model_id),
        prompt_cache_disk_bytes=int(settings.prompt_cache_disk_gb * 1e9),
        prompt_cache_disk_min_tokens=settings.prompt_cache_disk_min_tokens,
        kv_bits=record.kv_bits,
    )
    engine = Engine(lambda: load_handler(model_type, path, record.context_length, limits), warmup=settings.mlx_warmup)
    engine.start()
    return engine


def serve(
    settings: Settings,
    record: registry.ModelRecord,
    engine: Engine,
    supervisor_pid: int | None = None,
    concurrency: int | None = None,
) -> None:
    """Consumes the model's queue until the worker is told to stop, then leaves (no beat after) and stops the
    engine."""
    model_id, model_type = record.model_id, record.model_type
    batch_size = record.max_concurrency or settings.max_concurrency
    hostname = f"{slug(model_id)}.{os.getpid()}@{settings.node}"
    client = connect_redis(settings)
    relay = RedisRelay(client).start()
    runtime = Runtime(settings, model_id, model_type, hostname, engine, client, batch_size, relay=relay)
    install(runtime)
    for plugin in settings.worker_plugin_modules:
        importlib.import_module(plugin).install(runtime)
    liveness = Liveness(client, settings.worker_heartbeat_ttl_seconds)
    wake, stop = threading.Event(), threading.Event()
    engine.on_change = wake.set
    heartbeat = threading.Thread(
        target=_beat_until_stopped,
        args=(runtime, liveness, wake, stop, supervisor_pid),
        name="heartbeat",
        daemon=True,
    )
    heartbeat.start()

    celery = create_celery(settings)
    prober = threading.Thread(target=probes.send_probes, args=(runtime, stop), name="health-probes", daemon=True)
    prober.start()
    # One request ready behind each running one: the rest wait in the broker, where priorities apply and
    # other workers of the model can take them.
    concurrency = concurrency or batch_size + 1
    try:
        celery.worker_main(
            [
                "worker",
                "--queues",
                f"{model_queue(model_id)},{probe_queue(hostname)}",
                "--pool",
                "threads",
                "--concurrency",
                str(concurrency),
                "--hostname",
                hostname,
                "--loglevel",
                settings.log_level,
                "--without-gossip",
                "--without-mingle",
                "--events",
                "--heartbeat-interval",
                str(EVENT_HEARTBEAT_SECONDS),
            ]
        )
    finally:
        stop.set()
        wake.set()
        heartbeat.join(5)  # no beat may land after leaving, or the model would look served for a TTL more
        liveness.leave(model_id, hostname)
        engine.stop()
        relay.stop()
