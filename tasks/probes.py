"""Health probes: every model worker makes a tiny real call of its model through its own Celery queue, regularly.

A thread of the worker sends ``mlxf.probe`` to the worker's probe queue (only this worker consumes it); the task
runs on a pool thread like any request and hands the model type's probe call to the engine. The heartbeat carries
when it last answered (``probe_answered_at``), and ``/health`` and the supervisor judge the worker by it
(``models.liveness.probe_verdict``): a worker whose consumer or engine hangs stops answering while its process runs.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

from celery import shared_task

from config.model_types import model_type
from models.liveness import probe_queue
from tasks.serving import Runtime, current

log = logging.getLogger(__name__)

PROBE_REQUEST_ID = "health-probe"


@shared_task(name="mlxf.probe", ignore_result=True, acks_late=False)
def probe() -> None:
    """Runs the model type's probe call on this worker's engine and notes how it went."""
    runtime = current()
    operation, payload = model_type(runtime.model_type).probe
    abandoned = threading.Event()
    started = time.perf_counter()
    runtime.probe.in_flight = True
    try:
        future = runtime.engine.submit(
            operation, dict(payload), lambda _event: None, abandoned.is_set, PROBE_REQUEST_ID
        )
        future.result(timeout=runtime.settings.health_probe_max_age_seconds)
    except FutureTimeout:
        abandoned.set()
        runtime.probe.error = f"no answer within {runtime.settings.health_probe_max_age_seconds:g}s"
        log.warning("the health probe got %s", runtime.probe.error)
        return
    except Exception as exc:  # noqa: BLE001 - a probe that fails is what the heartbeat reports
        runtime.probe.error = f"{type(exc).__name__}: {exc}"
        log.warning("the health probe failed: %s", runtime.probe.error)
        return
    finally:
        runtime.probe.in_flight = False
    runtime.probe.ms = round((time.perf_counter() - started) * 1000, 1)
    runtime.probe.answered_at = time.time()
    runtime.probe.error = None


def send_probes(runtime: Runtime, stop: threading.Event) -> None:
    """Sends a probe to this worker's own queue at once, then every ``HEALTH_PROBE_INTERVAL_SECONDS``; a probe
    not taken up before the next is due expires (a hung consumer must not find a backlog of them)."""
    interval = runtime.settings.health_probe_interval_seconds
    queue = probe_queue(runtime.hostname)
    while not stop.is_set():
        try:
            probe.apply_async(queue=queue, expires=interval)
        except Exception:  # noqa: BLE001 - Redis briefly away: the next probe is sent on time
            log.warning("could not send a health probe", exc_info=True)
        stop.wait(interval)
