"""The engine thread: the one thread of a worker process that owns the model (MLX state is per thread).

Celery's pool threads hand requests over with ``submit`` and wait on the
returned future. The engine takes them most urgent first (interactive requests
at priority 0, then jobs by their priority, then batch lines at 10), in arrival
order within a priority: a language model's requests join its continuous batch
(``models.batch``) while it has room, or while a less urgent row can give way to
them; other work runs alone.
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

from config.errors import ApiError
from config.logs import request_id_var
from models.batch import BATCHED_OPERATIONS, BatchSession, Request, Ticket
from models.handlers.base import PROGRESS, Cancelled, Emit, ModelHandler, RequestCancelled

log = logging.getLogger(__name__)

STOP_PRIORITY = 1_000_000


@dataclass
class Work:
    operation: str
    payload: dict[str, Any]
    emit: Emit
    cancelled: Cancelled
    request_id: str
    priority: int = 0
    future: Future = field(default_factory=Future)
    prepared: Request | None = None
    """A batched request as the batch prepared it on the submitter's thread."""
    emitted: bool = False
    """Whether an event (a delta, say) has gone out to the request's client."""

    @property
    def shown(self) -> bool:
        """Whether the client has something of its answer: a streamed request once an event went out (a first
        token can decode to no text yet, half a character say), any other request from its first token on."""
        return self.emitted or not self.payload.get("stream")


CheckpointHook = Callable[[str, Cancelled, bool], None]
"""Called with a request's id, its cancel check and whether its client has been shown output (``Work.shown``) at
every checkpoint between two tokens (a plug-in point: none in production; the test session's plug-in holds a
generation with one)."""


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
        self.solo_active = 0
        self.batch_active = 0
        self.batch_peak = 0
        """The most requests the batch has held at once."""
        self.checkpoint_hooks: list[CheckpointHook] = []
        self.solo_served = 0
        self.answered_at: float | None = None
        """When (wall clock) the engine last answered a request, a health probe's included: a recent answer proves
        the worker serves, so no probe is needed (``tasks.probes``)."""
        self.last_progress = time.monotonic()
        """When the engine last made progress: took up work, or reached a checkpoint between two tokens."""
        self.on_change: Callable[[], None] = lambda: None

    @property
    def active(self) -> int:
        """Requests being served now: in the batch, or alone."""
        return self.solo_active + self.batch_active

    @property
    def queued(self) -> int:
        """Requests waiting for the engine: in its inbox, or checked and waiting to join the batch."""
        batch = getattr(self.handler, "batch", None)
        return self._inbox.qsize() + (len(batch.pending) if batch is not None else 0)

    @property
    def served(self) -> int:
        batch = getattr(self.handler, "batch", None)
        return self.solo_served + (batch.completed if batch is not None else 0)

    @property
    def preemptions(self) -> int:
        """Rows of the batch that gave way to a more urgent request, since the worker started."""
        batch = getattr(self.handler, "batch", None)
        return batch.preemptions if batch is not None else 0

    @property
    def draft_tokens(self) -> tuple[int, int]:
        """Draft tokens the batch checked, and those it kept (speculative decoding), since its generator started."""
        generator = getattr(getattr(self.handler, "batch", None), "generator", None)
        stats = getattr(generator, "draft_stats", None)
        return (stats.drafted, stats.accepted) if stats is not None else (0, 0)

    def stalled_seconds(self) -> float:
        """How long the engine has had work (running, or waiting for it) without making progress; 0 while idle."""
        return time.monotonic() - self.last_progress if self.active or self.queued else 0.0

    def start(self) -> None:
        """Loads (and warms) the model on the engine thread; raises what loading raised."""
        self._thread.start()
        self._ready.wait()
        if self.load_error is not None:
            raise self.load_error

    def stop(self, timeout: float = 10.0) -> None:
        """Asks the engine thread to finish what is in its batch, and waits for it (MLX must not be torn down under
        it); work still waiting behind the stop is not started."""
        self._inbox.put((STOP_PRIORITY, next(self._arrivals), None))
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(
        self,
        operation: str,
        payload: dict[str, Any],
        emit: Emit,
        cancelled: Cancelled,
        request_id: str = "-",
        priority: int = 0,
    ) -> Future:
        """Queues work for the engine thread; lower ``priority`` runs first."""
        assert self.handler is not None, "engine not started"
        work = Work(operation, payload, emit, cancelled, request_id, priority)
        batch: BatchSession | None = getattr(self.handler, "batch", None)
        if batch is not None and operation in BATCHED_OPERATIONS:
            work.prepared = batch.prepare(self._ticket(work))
            if work.prepared is None:
                return work.future  # the 400 is in it already
        if not self.active and not self.queued:
            self.last_progress = time.monotonic()  # an idle engine has made no progress since: it had nothing to do
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
        batch: BatchSession | None = getattr(self.handler, "batch", None)
        while self._take_work(batch):
            if batch is not None and batch.busy:
                self._step(batch)
        close = getattr(self.handler, "close", None)
        if close is not None:
            close()

    def _take_work(self, batch: BatchSession | None) -> bool:
        """Takes waiting work while the batch has room, or a row that can give way to it (blocking only when idle);
        False once told to stop."""
        while batch is None or not batch.busy or batch.has_room or self._can_displace(batch):
            try:
                work = self._inbox.get(block=batch is None or not batch.busy)[2]
            except queue.Empty:
                return True
            if work is None:
                return False
            if batch is not None and work.operation in BATCHED_OPERATIONS:
                self._join(batch, work)
            else:
                self._serve(work)
                return True
        return True

    def _can_displace(self, batch: BatchSession) -> bool:
        """Whether the most urgent waiting work would find a row of the busy batch: one left free by less urgent
        work waiting to join (lines that gave way), or one that gives way to it."""
        with self._inbox.mutex:
            if not self._inbox.queue:
                return False
            priority, _arrival, work = self._inbox.queue[0]
        return work is not None and work.operation in BATCHED_OPERATIONS and batch.could_make_room_for(priority)

    def _join(self, batch: BatchSession, work: Work) -> None:
        if not work.future.set_running_or_notify_cancel():
            return
        self.last_progress = time.monotonic()
        if work.prepared is not None:
            batch.submit(work.prepared.ticket, work.prepared)
        else:
            batch.submit(self._ticket(work))
        self.on_change()

    def _ticket(self, work: Work) -> Ticket:
        return Ticket(
            work.operation,
            work.payload,
            self._emitter(work),
            self._checkpoint(work),
            work.cancelled,
            work.future,
            work.request_id,
            priority=work.priority,
        )

    def _step(self, batch: BatchSession) -> None:
        """One step of the batch; a failure of the step (out of memory, say) ends its requests, not the worker."""
        running, completed = len(batch.running), batch.completed
        try:
            batch.step()
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error; the worker goes on
            log.exception("a batch step failed; its %d requests end with the error", running)
            batch.fail_all(
                ApiError(503, f"The model could not go on: {type(exc).__name__}: {exc}", code="inference_failed")
            )
        self.last_progress = time.monotonic()
        if batch.completed != completed:
            self.answered_at = time.time()
        if len(batch.running) != self.batch_active:
            self.batch_active = len(batch.running)
            self.batch_peak = max(self.batch_peak, self.batch_active)
            self.on_change()

    def _emitter(self, work: Work) -> Emit:
        """Passes events on to the request; every event, ``PROGRESS`` included, counts as progress."""

        def emit(event: dict[str, Any]) -> None:
            self.last_progress = time.monotonic()
            if event is not PROGRESS:
                work.emit(event)
                work.emitted = True

        return emit

    def _checkpoint(self, work: Work) -> Cancelled:
        """What runs between two tokens: progress, the checkpoint hooks if any, then the cancel check."""

        def checkpoint() -> bool:
            self.last_progress = time.monotonic()
            for hook in self.checkpoint_hooks:
                hook(work.request_id, work.cancelled, work.shown)
            return work.cancelled()

        return checkpoint

    def _serve(self, work: Work) -> None:
        if not work.future.set_running_or_notify_cancel():
            return
        if work.cancelled():
            work.future.set_exception(RequestCancelled("cancelled before it started"))
            return
        token = request_id_var.set(work.request_id)
        self.last_progress = time.monotonic()
        self.solo_active += 1
        self.on_change()
        started = time.perf_counter()

        try:
            result = self.handler.run(work.operation, work.payload, self._emitter(work), self._checkpoint(work))
            log.info(
                "%s finished in %.0f ms (%s)",
                work.operation,
                (time.perf_counter() - started) * 1000,
                result.get("finish_reason", "ok"),
            )
            self.answered_at = time.time()
            work.future.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting task
            work.future.set_exception(exc)
        finally:
            self.solo_active -= 1
            self.solo_served += 1
            request_id_var.reset(token)
            self.on_change()
