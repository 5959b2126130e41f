"""A model worker: loads one model, keeps it warm, and consumes its queue ``model.<id>``.

``python -m tasks.model_worker --model-id ID`` loads and validates the model before
consuming anything; a model that fails to load is recorded as failed and the
process exits non-zero.

This module is the worker's light start: it re-executes the process with OpenBLAS preloaded before anything imports
MLX's libraries, and marks PyTorch absent first when the model type needs none (``models.torch_absent``);
``tasks.model_serving`` then loads and serves the model.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import redis

from config import mongo
from config.errors import ApiError
from config.logs import configure_logging
from config.redis_client import connect_redis
from config.settings import Settings
from models import hub, registry, torch_absent
from models.blas import reexec_with_openblas
from models.catalog import load_catalog, served_path
from models.liveness import Liveness
from models.supervisor import EXIT_LOAD_FAILED, EXIT_UNKNOWN_MODEL

log = logging.getLogger("tasks.model_worker")


def _register_from_catalog(settings: Settings, model_id: str) -> registry.ModelRecord | None:
    """Registers a catalog model started directly (``python -m tasks.model_worker``), without the supervisor."""
    spec = load_catalog(settings).get(model_id)
    if spec is None:
        return None
    registry.request_catalog_load(spec, served_path(settings, spec), [settings.node])
    return registry.get_record(model_id)


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


def _record_failed(settings: Settings, model_id: str, message: str) -> None:
    """A load that failed here: this node's failure while workers of other nodes serve the model, else the
    model's."""
    try:
        workers = Liveness(connect_redis(settings), settings.worker_heartbeat_ttl_seconds).workers(model_id)
    except redis.RedisError:
        workers = []
    elsewhere = any(worker.get("node") != settings.node for worker in workers)
    registry.record_failed(model_id, message, settings.node, elsewhere)


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
    hidden = torch_absent.wanted(settings, args.model_id) and torch_absent.hide_torch()
    # Only now: mlx-lm, and through it transformers, come with the serving module. MongoDB is first reached after
    # these imports, as before they moved here: a worker started beside a web and a control worker on a new
    # database (a small test stack) then finds its collections made (SecantusDB, the stand-in Mongo-wire server,
    # has hung with several processes creating one collection at once).
    from tasks.model_serving import load_engine, serve

    mongo.connect(settings)
    record = registry.get_record(args.model_id) or _register_from_catalog(settings, args.model_id)
    if record is None:
        log.error("model %r is neither registered nor in the catalog", args.model_id)
        return EXIT_UNKNOWN_MODEL
    model_id, model_type = record.model_id, record.model_type
    if hidden:
        log.info("PyTorch is not loaded in this worker: %s models compute without it", model_type)
    try:
        path = fetch_from_hub(model_id, record.path, settings.node)
    except Exception as exc:  # noqa: BLE001 - the Hub's and the network's errors end the load, named
        message = exc.message if isinstance(exc, ApiError) else f"{type(exc).__name__}: {exc}"
        log.error("model %s could not be fetched: %s", model_id, message)
        _record_failed(settings, model_id, message)
        return EXIT_LOAD_FAILED
    try:
        engine = load_engine(settings, record, path)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        log.error("model %s failed to load: %s", model_id, message)
        _record_failed(settings, model_id, message)
        return EXIT_LOAD_FAILED
    registry.record_loaded(model_id, engine.memory_bytes, engine.load_seconds * 1000, engine.handler.context_length)
    log.info("loaded %s in %.1fs, %.1f MB", model_id, engine.load_seconds, engine.memory_bytes / 1e6)
    serve(settings, record, engine, args.supervisor_pid, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
