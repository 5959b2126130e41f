"""Health probes: a model worker that has answered nothing for its probe interval makes a tiny real call of its
model through its own Celery queue.

A thread of the worker sends ``mlxf.probe`` to the worker's probe queue (only this worker consumes it); the task
runs on a pool thread like any request and hands the model type's probe call to the engine. The heartbeat carries
when it last answered, a probe (``probe_answered_at``) or a request (``answered_at``: the request proved it, so no
probe is sent), and ``/health`` and the supervisor judge the worker by it (``models.liveness.probe_verdict``): a
worker whose consumer or engine hangs stops answering while its process runs.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

from celery import shared_task

from config.model_types import model_type
from config.settings import Settings
from models.liveness import probe_queue
from tasks.serving import Runtime, current

log = logging.getLogger(__name__)

PROBE_REQUEST_ID = "health-probe"
INTERVAL_SHARE = 1 / 2
"""The longest probe interval, as a share of ``HEALTH_PROBE_MAX_AGE_SECONDS``."""
RETRY_SHARE = 1 / 4
"""A probe unanswered this long (a share of ``HEALTH_PROBE_MAX_AGE_SECONDS``, at most the interval) expires and is
sent again: with one probe lost, a healthy worker still answers within the max age (half of it, a quarter, and the
probe's own time), so it never looks stale."""


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


def probe_interval(settings: Settings, type_name: str) -> float:
    """Seconds a worker of ``type_name`` may go without answering before it is probed: ``HEALTH_PROBE_INTERVAL_SECONDS``
    times the type's ``probe_every``, at most half of ``HEALTH_PROBE_MAX_AGE_SECONDS``."""
    row = model_type(type_name)
    every = row.probe_every if row is not None else 1.0
    return min(settings.health_probe_interval_seconds * every, settings.health_probe_max_age_seconds * INTERVAL_SHARE)


def probe_retry(settings: Settings, interval: float) -> float:
    """Seconds after which an unanswered probe expires and another is sent (see ``RETRY_SHARE``)."""
    return min(interval, settings.health_probe_max_age_seconds * RETRY_SHARE)


def probe_due_in(probed_at: float | None, answered_at: float | None, now: float, interval: float) -> float:
    """Seconds until the next probe is due (0: now). The first is due at once; after it, only when the engine
    (``answered_at``: its last answer, probes included) has answered nothing for ``interval``: a request answered
    within it proved the worker as a probe would."""
    if probed_at is None or answered_at is None:
        return 0.0
    return max(0.0, answered_at + interval - now)


def send_probes(runtime: Runtime, stop: threading.Event) -> None:
    """Sends a probe to this worker's own queue at once, then whenever the engine has answered nothing (no request,
    no probe) for the type's ``probe_interval``. A probe not taken up within ``probe_retry`` expires (a hung consumer
    must not find a backlog of them), and another is sent if nothing answered meanwhile."""
    interval = probe_interval(runtime.settings, runtime.model_type)
    retry = probe_retry(runtime.settings, interval)
    queue = probe_queue(runtime.hostname)
    while not stop.is_set():
        wait = probe_due_in(runtime.probe.answered_at, runtime.engine.answered_at, time.time(), interval)
        if wait > 0:
            stop.wait(wait)
            continue
        try:
            probe.apply_async(queue=queue, expires=retry)
        except Exception:  # noqa: BLE001 - Redis briefly away: the next probe is sent on time
            log.warning("could not send a health probe", exc_info=True)
        stop.wait(retry)
