"""The engine thread: the one thread of a worker process that owns the model (MLX state is per thread).

Celery's pool threads hand requests over with ``submit`` and wait on the
returned future; the engine runs them one at a time today, most urgent first
(interactive requests at priority 0, then jobs by their priority), in arrival
order within a priority. Keeping this shape
is what later lets concurrent requests share a batch without a new worker.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from config.logs import request_id_var
from models.handlers.base import PROGRESS, Cancelled, Emit, ModelHandler

log = logging.getLogger(__name__)

STOP_PRIORITY = 1_000_000


class RequestCancelled(Exception):
    """The request was cancelled while it waited for the engine; it never ran."""


@dataclass
class Work:
    operation: str
    payload: dict[str, Any]
    emit: Emit
    cancelled: Cancelled
    request_id: str
    pause: Callable[[], None] | None = None
    """Called at every checkpoint between two tokens before the cancel check (tests hold a generation with it)."""
    future: Future = field(default_factory=Future)


class Engine:
    def __init__(self, load: Callable[[], ModelHandler], warmup: bool = True) -> None:
        self._load = load
        self._warmup = warmup
        self._inbox: queue.PriorityQueue[tuple[int, int, Work | None]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mlx-engine", daemon=True)
        self.handler: ModelHandler | None = None
        self.load_error: BaseException | None = None
        self.load_seconds = 0.0
        self.warmup_completed = False
        self.memory_bytes = 0
        self.active = 0
        self.served = 0
        self.last_progress = time.monotonic()
        """When the engine last made progress: took up work, or reached a checkpoint between two tokens."""
        self.on_change: Callable[[], None] = lambda: None

    @property
    def queued(self) -> int:
        return self._inbox.qsize()

    def stalled_seconds(self) -> float:
        """How long the engine has had work without making progress; 0 while idle."""
        return time.monotonic() - self.last_progress if self.active else 0.0

    def start(self) -> None:
        """Loads (and warms) the model on the engine thread; raises what loading raised."""
        self._thread.start()
        self._ready.wait()
        if self.load_error is not None:
            raise self.load_error

    def stop(self) -> None:
        self._inbox.put((STOP_PRIORITY, next(self._arrivals), None))

    def submit(
        self,
        operation: str,
        payload: dict[str, Any],
        emit: Emit,
        cancelled: Cancelled,
        request_id: str = "-",
        priority: int = 0,
        pause: Callable[[], None] | None = None,
    ) -> Future:
        """Queues work for the engine thread; lower ``priority`` runs first."""
        assert self.handler is not None, "engine not started"
        work = Work(operation, payload, emit, cancelled, request_id, pause)
        self._inbox.put((priority, next(self._arrivals), work))
        self.on_change()
        return work.future

    def _run(self) -> None:
        import mlx.core as mx

        started = time.perf_counter()
        try:
            self.handler = self._load()
            if self._warmup:
                self.handler.warmup()
                self.warmup_completed = True
            self.memory_bytes = int(mx.get_active_memory())
        except BaseException as exc:  # noqa: BLE001 - reported to the starter, which exits
            self.load_error = exc
            self._ready.set()
            return
        self.load_seconds = time.perf_counter() - started
        self._ready.set()
        while (work := self._inbox.get()[2]) is not None:
            self._serve(work)

    def _serve(self, work: Work) -> None:
        if not work.future.set_running_or_notify_cancel():
            return
        if work.cancelled():
            work.future.set_exception(RequestCancelled("cancelled before it started"))
            return
        token = request_id_var.set(work.request_id)
        self.last_progress = time.monotonic()
        self.active += 1
        self.on_change()
        started = time.perf_counter()

        def emit(event: dict[str, Any]) -> None:
            self.last_progress = time.monotonic()
            if event is not PROGRESS:
                work.emit(event)

        def checkpoint() -> bool:
            self.last_progress = time.monotonic()
            if work.pause is not None:
                work.pause()
            return work.cancelled()

        try:
            result = self.handler.run(work.operation, work.payload, emit, checkpoint)
            log.info(
                "%s finished in %.0f ms (%s)",
                work.operation,
                (time.perf_counter() - started) * 1000,
                result.get("finish_reason", "ok"),
            )
            work.future.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting task
            work.future.set_exception(exc)
        finally:
            self.active -= 1
            self.served += 1
            request_id_var.reset(token)
            self.on_change()
