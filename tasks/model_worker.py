"""A model worker: loads one model, keeps it warm, and consumes its queue ``model.<id>``.

``python -m tasks.model_worker --model-id ID`` loads and validates the model before
consuming anything; a model that fails to load is recorded as failed and the
process exits non-zero.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from config import mongo
from config.errors import ApiError
from config.logs import configure_logging
from config.redis_client import connect_redis
from config.settings import Settings
from models import hub, registry
from models.blas import reexec_with_openblas
from models.catalog import load_catalog, served_path, slug
from models.engine import Engine
from models.handlers import load_handler
from models.handlers.base import ServingLimits
from models.liveness import Liveness, probe_queue
from models.supervisor import EXIT_LOAD_FAILED, EXIT_UNKNOWN_MODEL
from tasks import inference, job_store, jobs, probes, request_ids  # noqa: F401 - importing them registers the tasks
from tasks.celery_app import create_celery, model_queue
from tasks.redis_relay import RedisRelay
from tasks.serving import Runtime, install

log = logging.getLogger("tasks.model_worker")
_PROCESS = psutil.Process()
"""This worker process: its resident memory goes into every heartbeat (``/v1/models/{id}/stats``, ``/metrics``)."""


def _register_from_catalog(settings: Settings, model_id: str) -> registry.ModelRecord | None:
    """Registers a catalog model started directly (``python -m tasks.model_worker``), without the supervisor."""
    spec = load_catalog(settings).get(model_id)
    if spec is None:
        return None
    registry.request_catalog_load(spec, served_path(settings, spec), [settings.node])
    return registry.get_record(model_id)


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


def fetch_from_hub(model_id: str, recorded: str, node: str) -> Path:
    """The folder of the model: ``recorded`` itself, or for ``hf://<repo>`` the repo's snapshot in this node's
    Hugging Face cache, downloaded first when missing (progress in the registry and the log)."""
    if not recorded.startswith(hub.HUB_PREFIX):
        return Path(recorded)
    repo = recorded.removeprefix(hub.HUB_PREFIX)
    folder = hub.cached(repo)
    if folder is None:
        log.info("downloading %s from the Hugging Face Hub", repo)
        reported = [0.0]

        def progress(done: int, total: int) -> None:
            if time.monotonic() - reported[0] >= 1 or done == total:
                reported[0] = time.monotonic()
                registry.record_download(model_id, repo, done, total)
                log.info("downloading %s: %.1f of %.1f MB", repo, done / 1e6, total / 1e6)

        folder = hub.download(repo, progress)
    registry.record_downloaded(model_id, node, folder)
    return folder


EVENT_HEARTBEAT_SECONDS = 10
"""How often the worker's Celery event heartbeat tells Flower it is online (Celery's default, 2 s, costs every worker
and Flower a wake-up for nothing at rest; the platform's own liveness is the Redis beat of ``models.liveness``)."""

KV_SHARE_OF_AVAILABLE = 0.5
"""The most of the memory available at start a worker's KV cache may take, whatever ``ENGINE_KV_BUDGET_GB`` says."""


def _record_failed(settings: Settings, model_id: str, message: str) -> None:
    """A load that failed here: this node's failure while workers of other nodes serve the model, else the
    model's."""
    try:
        workers = Liveness(connect_redis(settings), settings.worker_heartbeat_ttl_seconds).workers(model_id)
    except redis.RedisError:
        workers = []
    elsewhere = any(worker.get("node") != settings.node for worker in workers)
    registry.record_failed(model_id, message, settings.node, elsewhere)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve one model from its Celery queue.")
    parser.add_argument("--model-id", required=True)
    parser.add_argument(
        "--supervisor-pid",
        type=int,
        default=None,
        help="the supervisor that started this worker: when it is gone, the worker shuts down (warm) after it",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="Celery pool threads handing requests to the engine (default: MAX_CONCURRENCY + 1)",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    reexec_with_openblas(settings.openblas_library)
    configure_logging(settings.log_level)

    mongo.connect(settings)
    record = registry.get_record(args.model_id) or _register_from_catalog(settings, args.model_id)
    if record is None:
        log.error("model %r is neither registered nor in the catalog", args.model_id)
        return EXIT_UNKNOWN_MODEL
    model_id, model_type = record.model_id, record.model_type
    try:
        path = fetch_from_hub(model_id, record.path, settings.node)
    except Exception as exc:  # noqa: BLE001 - the Hub's and the network's errors end the load, named
        message = exc.message if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
        log.error("model %s could not be fetched: %s", model_id, message)
        _record_failed(settings, model_id, message)
        return EXIT_LOAD_FAILED
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
    try:
        engine.start()
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        log.error("model %s failed to load: %s", model_id, message)
        _record_failed(settings, model_id, message)
        return EXIT_LOAD_FAILED
    context_length = engine.handler.context_length
    registry.record_loaded(model_id, engine.memory_bytes, engine.load_seconds * 1000, context_length)
    log.info("loaded %s in %.1fs, %.1f MB", model_id, engine.load_seconds, engine.memory_bytes / 1e6)

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
        args=(runtime, liveness, wake, stop, args.supervisor_pid),
        name="heartbeat",
        daemon=True,
    )
    heartbeat.start()

    celery = create_celery(settings)
    prober = threading.Thread(target=probes.send_probes, args=(runtime, stop), name="health-probes", daemon=True)
    prober.start()
    # One request ready behind each running one: the rest wait in the broker, where priorities apply and
    # other workers of the model can take them.
    concurrency = args.concurrency or batch_size + 1
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
