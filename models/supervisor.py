"""The model supervisor of one node: keeps one warm worker process per replica the registry places on the node.

``python -m models.supervisor`` beats its node (``NODE_NAME``, its memory budget
and ``NODE_MODELS``) into Redis and seeds the registry with the catalog's
autostart models it may serve, then every tick places the replicas of nodes that
vanished on nodes with room, starts a worker for each replica placed on this
node that has none, restarts workers that died (with a limit, so a model that
crashes on every start ends ``failed``), and stops the workers of models desired
``unloaded`` (SIGTERM lets Celery finish running requests; ``force`` kills at
once) before forgetting them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.exceptions import LockError

from config import mongo
from config.errors import ApiError
from config.model_types import model_type as model_type_row
from config.redis_client import connect_redis
from config.settings import Settings
from models import registry
from models.blas import preloaded_environment
from models.catalog import load_catalog, served_path
from models.lifecycle import held_bytes, node_holdings
from models.liveness import SERVING_VERDICTS, Liveness, probe_verdict, user_requests
from models.nodes import Node, NodeBeats, allows, backend
from models.placement import Holding, place
from models.stats import ModelStats
from models.torch_absent import WITHOUT_TORCH

log = logging.getLogger("models.supervisor")

WORKER_MODULE = "tasks.model_worker"
"""The worker process the supervisor starts (``python -m``): the Celery side's bootstrap of one model."""
EXIT_LOAD_FAILED = 3
"""Exit status of a worker whose model failed to load: the supervisor does not restart it."""
EXIT_UNKNOWN_MODEL = 4
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 120.0
GRACEFUL_STOP_SECONDS = 60.0
REST_TICK_SECONDS = 2.0
"""Seconds between two ticks while nothing is in motion (see ``at_rest``), at most a third of the heartbeat TTL so
that the node never looks gone; ``--interval`` (1 s) otherwise. A load asked for at rest starts this much later at
most; at rest the supervisor reads MongoDB and Redis half as often (``python -m bench idle``)."""


Slot = tuple[str, int]
"""A worker process of this node: its model, and which of the model's replicas on the node it is (0, 1, ...)."""


@dataclass(frozen=True)
class Action:
    kind: str
    """``start`` or ``stop`` a worker, ``forget`` an unloaded record, ``restart`` a stalled worker, ``fail`` a model."""
    model_id: str
    replica: int = 0
    force: bool = False
    reason: str = ""
    of: int = 1
    """For ``start``: how many replicas of the model this node runs (they share its cores)."""


def plan(
    records: list[registry.ModelRecord],
    children: dict[Slot, bool],
    failing: Mapping[Slot, str],
    moment: datetime,
    loading_deadline_seconds: float,
    node: str,
) -> list[Action]:
    """What one tick of ``node``'s supervisor does, decided from the registry and its workers (no side effects).

    A record wants as many workers on ``node`` as its ``nodes`` name it. ``children`` maps each worker process to
    whether a stop was already sent to it; ``failing`` maps the workers that must be restarted (see
    ``Supervisor.failing_workers``) to why.
    """
    actions: list[Action] = []
    wanted: dict[str, int] = {}
    for record in records:
        model_id = record.model_id
        mine = sorted(slot for slot in children if slot[0] == model_id)
        if record.desired == "unloaded":
            stops = [Action("stop", model_id, index, force=record.force_unload) for _, index in mine]
            actions.extend(stops or [Action("forget", model_id)])
            wanted[model_id] = len(children)  # every worker of it has its stop above
            continue
        wanted[model_id] = count = list(record.nodes).count(node)
        since = record.updated_at
        if count and record.status == "loading" and since is not None:
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            if (moment - since).total_seconds() > loading_deadline_seconds:
                reason = f"the model did not finish loading within {loading_deadline_seconds:g}s"
                actions.append(Action("fail", model_id, reason=reason))
                continue
        for index in range(count):
            slot = (model_id, index)
            if slot in children and slot in failing and record.status == "loaded":
                actions.append(Action("restart", model_id, index, reason=failing[slot]))
            elif slot not in children and record.status in ("loading", "loaded"):
                actions.append(Action("start", model_id, index, of=count))
    actions.extend(Action("stop", model_id, index) for model_id, index in children if index >= wanted.get(model_id, 0))
    return actions


def worker_environment(replicas_here: int, openblas: str = "", model_type: str = "") -> dict[str, str]:
    """A worker's environment: the supervisor's, with OpenBLAS preloaded (the worker need not re-execute itself)
    and its threads split among the model's replicas on this node (the cores divided by their number; measured in
    the README's replicas benchmark: two processes with every core's thread each spin against each other).
    ``OPENBLAS_NUM_THREADS`` set by the operator wins. A ``model_type`` with ``hides_torch`` sets ``WITHOUT_TORCH``
    (``models.torch_absent``)."""
    env = preloaded_environment(os.environ, openblas)
    row = model_type_row(model_type)
    env[WITHOUT_TORCH] = "1" if row is not None and row.hides_torch else "0"
    if "OPENBLAS_NUM_THREADS" not in env and replicas_here > 1:
        env["OPENBLAS_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // replicas_here))
    return env


def _off_nodes(record: registry.ModelRecord, live: Mapping[str, Node]) -> tuple[list[str], int] | None:
    """For a wanted model with replicas to place (their node is gone, or none had room): the nodes of its replicas
    that still run, and how many replicas have none; None when each replica has a running node."""
    if record.desired != "loaded" or record.status == "failed":
        return None
    kept = [name for name in record.nodes if name in live]
    missing = max(0, (record.replicas or 1) - len(kept))
    if not missing and kept == list(record.nodes):
        return None
    return kept, missing


@dataclass
class Child:
    model_id: str
    replica: int
    process: subprocess.Popen
    stop_sent_at: float | None = None
    unresponsive_since: float | None = None
    """Since when (monotonic) the worker has neither answered its health probes nor been busy serving."""

    @property
    def slot(self) -> Slot:
        return (self.model_id, self.replica)


def at_rest(records: list[registry.ModelRecord], children: list[Child], actions: list[Action]) -> bool:
    """Whether a tick found nothing in motion: it did nothing, no record is loading or unloading, and no worker is
    being stopped or is unresponsive."""
    return (
        not actions
        and all(record.status in ("loaded", "failed") and record.desired == "loaded" for record in records)
        and all(child.stop_sent_at is None and child.unresponsive_since is None for child in children)
    )


@dataclass
class Supervisor:
    settings: Settings
    children: dict[Slot, Child] = field(default_factory=dict)
    liveness: Liveness | None = None
    nodes: NodeBeats | None = None
    node: Node | None = None
    """This supervisor's node, as it beats it."""
    crashes: dict[str, deque] = field(default_factory=dict)
    stats: ModelStats | None = None
    """Last use of each model (for unloading idle on-demand models)."""
    on_demand: dict[str, float] | None = None
    """Idle seconds of each on-demand catalog model, read from the catalog once (as ``seed`` reads it)."""
    unplaced: dict[str, int] = field(default_factory=dict)
    """Replicas of each model no node had room for, at the last look (logged when it changes)."""
    running: bool = True
    resting: bool = False
    """Whether the last tick found nothing in motion (``at_rest``)."""

    @property
    def name(self) -> str:
        return self.settings.node

    def tick_seconds(self, interval: float) -> float:
        """How long to wait before the next tick: ``interval``, or ``REST_TICK_SECONDS`` at rest."""
        if not self.resting:
            return interval
        return max(interval, min(REST_TICK_SECONDS, self.settings.worker_heartbeat_ttl_seconds / 3))

    def seed(self) -> None:
        """Registers the autostart models this node may serve, on this node; a failed one is tried again at every
        supervisor start."""
        for spec in load_catalog(self.settings).values():
            if not spec.autostart:
                continue
            if not allows(self.settings.node_models, spec.model_id, spec.model_type):
                log.info("autostart %s: not on this node (NODE_MODELS %s)", spec.model_id, self.settings.node_models)
                continue
            registered = registry.request_catalog_load(spec, served_path(self.settings, spec), [self.name])
            if not registered:
                record = registry.get_record(spec.model_id)
                if record is not None and self.name in record.nodes and not self._served_elsewhere(spec.model_id):
                    registry.record_restarting(spec.model_id)
            log.info("autostart %s (%s)", spec.model_id, "registered" if registered else "already registered")

    def _served_elsewhere(self, model_id: str) -> bool:
        return self.liveness is not None and any(w.get("node") != self.name for w in self.liveness.workers(model_id))

    def start_worker(self, model_id: str, replica: int, replicas_here: int = 1, model_type: str = "") -> None:
        argv = [sys.executable, "-m", WORKER_MODULE, "--model-id", model_id, "--supervisor-pid", str(os.getpid())]
        env = worker_environment(replicas_here, self.settings.openblas_library, model_type)
        child = Child(model_id, replica, subprocess.Popen(argv, env=env))
        self.children[child.slot] = child
        log.info("started a worker for %s on node %s (pid %d)", model_id, self.name, child.process.pid)

    def _crashed_too_often(self, model_id: str) -> bool:
        now = time.monotonic()
        history = self.crashes.setdefault(model_id, deque())
        history.append(now)
        while history and now - history[0] > RESTART_WINDOW_SECONDS:
            history.popleft()
        return len(history) > MAX_RESTARTS

    def _reap(self, child: Child, record: registry.ModelRecord | None) -> None:
        """Handles a worker that exited; restarts it when it crashed while wanted."""
        code = child.process.returncode
        del self.children[child.slot]
        if self.liveness is not None:
            self.liveness.forget_process(child.model_id, child.process.pid, self.name)
        if record is None or record.desired != "loaded" or child.replica >= list(record.nodes).count(self.name):
            return  # unloaded, or this replica was taken off the node: stopped on purpose
        if code == EXIT_LOAD_FAILED:
            log.error("the model %s failed to load; not restarting it", child.model_id)
            return
        if self._crashed_too_often(child.model_id):
            registry.record_failed(
                child.model_id,
                f"the worker exited {MAX_RESTARTS + 1} times "
                f"within {RESTART_WINDOW_SECONDS:.0f}s on node {self.name} (last exit status {code})",
                self.name,
                self._serving_elsewhere(child.model_id),
            )
            return
        log.warning("the worker of %s exited with %s; restarting it", child.model_id, code)
        if self.liveness is None or not self.liveness.workers(child.model_id):
            registry.record_restarting(child.model_id)

    def _serving_elsewhere(self, model_id: str) -> bool:
        """Whether live workers of another node serve ``model_id``."""
        workers = self.liveness.workers(model_id) if self.liveness is not None else []
        return any(worker.get("node") != self.name for worker in workers)

    def _stop(self, child: Child, force: bool) -> None:
        if child.stop_sent_at is None:
            child.process.send_signal(signal.SIGKILL if force else signal.SIGTERM)
            child.stop_sent_at = time.monotonic()
            log.info("stopping the worker of %s (%s)", child.model_id, "force" if force else "graceful")
        elif time.monotonic() - child.stop_sent_at > GRACEFUL_STOP_SECONDS:
            child.process.kill()

    def failing_workers(
        self, records: dict[str, registry.ModelRecord], live: Mapping[str, list[dict]] | None = None
    ) -> dict[Slot, str]:
        """The workers of loaded models (children of this supervisor) that must be restarted, and why: the engine
        reports no progress, or the worker has been unresponsive (its health probes unanswered while it is not busy,
        or its heartbeat silent while its process runs) for ``HEALTH_PROBE_RESTART_SECONDS``. ``live``: the workers'
        reports by model, read once for the tick (read here when not given)."""
        if self.liveness is None:
            return {}
        if live is None:
            live = self.liveness.workers_by_model(sorted({child.model_id for child in self.children.values()}))
        failing = {}
        now, wall = time.monotonic(), time.time()
        for slot, child in self.children.items():
            record = records.get(child.model_id)
            if record is None or record.status != "loaded" or child.stop_sent_at is not None:
                child.unresponsive_since = None
                continue
            reports = live.get(child.model_id, [])
            report = next(
                (r for r in reports if r.get("pid") == child.process.pid and r.get("node") == self.name), None
            )
            if report is not None and report.get("stalled"):
                failing[slot] = "its engine stopped making progress"
                continue
            verdict = probe_verdict(report, wall, self.settings.health_probe_max_age_seconds)
            if verdict in SERVING_VERDICTS:
                child.unresponsive_since = None
                continue
            child.unresponsive_since = child.unresponsive_since or now
            silent_for = now - child.unresponsive_since
            if silent_for > self.settings.health_probe_restart_seconds:
                what = "its heartbeat stopped while its process runs" if report is None else "its health probes"
                failing[slot] = f"unresponsive for {silent_for:.0f}s ({what})"
        return failing

    def beat(self) -> dict[str, Node]:
        """Tells the other processes this node is alive; the live nodes (this one included)."""
        if self.nodes is None or self.node is None:
            return {}
        return self.nodes.beat_and_live(self.node)

    def tick(self) -> None:
        live_nodes = self.beat()
        records = {record.model_id: record for record in registry.list_records()}
        if live_nodes:
            self.place_missing(records, live_nodes)
        for child in list(self.children.values()):
            if child.process.poll() is not None:
                self._reap(child, records.get(child.model_id))
        # Every model's live workers in two round trips, for the whole tick (not two per model and step).
        live = self.liveness.workers_by_model(sorted(records)) if self.liveness is not None else {}
        actions = plan(
            list(records.values()),
            {slot: child.stop_sent_at is not None for slot, child in self.children.items()},
            self.failing_workers(records, live),
            datetime.now(UTC),
            self.settings.model_loading_deadline_seconds,
            self.name,
        )
        for action in actions:
            self.apply(action, records)
        self.unload_idle(records, live)
        self.resting = at_rest(list(records.values()), list(self.children.values()), actions)

    def place_missing(self, records: dict[str, registry.ModelRecord], live: dict[str, Node]) -> None:
        """Places the replicas that have no running node: those of a node that vanished, and those no node had room
        for until now. (Every supervisor does this; the registry's compare-and-set lets one of them move each.)
        Under the placement lock, with the records read again: when another placement holds it, the next tick
        looks again."""
        if self.nodes is None or not any(_off_nodes(record, live) for record in records.values()):
            return
        lock = self.nodes.placing()
        if not lock.acquire(blocking=False):
            return
        try:
            records.update((record.model_id, record) for record in registry.list_records())
            self._place_missing(records, live)
        finally:
            with suppress(LockError):
                lock.release()

    def _place_missing(self, records: dict[str, registry.ModelRecord], live: dict[str, Node]) -> None:
        for model_id, record in list(records.items()):
            off_nodes = _off_nodes(record, live)
            if off_nodes is None:
                continue
            placed = list(record.nodes)
            kept, missing = off_nodes
            failed_here = registry.failed_nodes(record)
            candidates = [
                node
                for node in live.values()
                if node.allows(model_id, record.model_type)
                and record.pinned_node in (None, node.name)
                and node.name not in failed_here
            ]
            held = node_holdings(list(records.values()), self.settings, exclude=model_id)
            size = held_bytes(record, self.settings)
            added: list[str] = []
            for _ in range(missing):  # one at a time: as many as fit now, the rest wait
                try:
                    added += place(size, 1, candidates, held, [*kept, *added], evict=False).nodes
                except ApiError:
                    break
                held.setdefault(added[-1], []).append(Holding(model_id, size, False, 0.0))
            after = kept + added
            if after == placed:
                self._note_unplaced(model_id, missing - len(added))
                continue
            if registry.move_replicas(model_id, placed, after, restarting=not kept):
                gone = sorted(set(placed) - set(live))
                log.warning(
                    "%s: replicas on %s now (were on %s%s)",
                    model_id,
                    after or "no node",
                    placed or "no node",
                    f"; gone: {', '.join(gone)}" if gone else "",
                )
                self._note_unplaced(model_id, missing - len(added))
                records[model_id] = registry.get_record(model_id) or record

    def _note_unplaced(self, model_id: str, count: int) -> None:
        if self.unplaced.get(model_id, 0) != count:
            if count:
                log.warning("%s: %d replica(s) wait for a node with room", model_id, count)
            self.unplaced[model_id] = count

    def unload_idle(
        self, records: dict[str, registry.ModelRecord], live: Mapping[str, list[dict]] | None = None
    ) -> None:
        """Unloads the on-demand models (catalog ``"on_demand": true``) no request has used for their idle time;
        ``live``: the workers' reports by model, read once for the tick."""
        if self.stats is None or self.liveness is None:
            return
        if self.on_demand is None:
            self.on_demand = {
                spec.model_id: spec.idle_unload_seconds or self.settings.idle_unload_seconds
                for spec in load_catalog(self.settings).values()
                if spec.on_demand
            }
        now = time.time()
        for model_id, record in records.items():
            limit = self.on_demand.get(model_id)
            if limit is None or record.status != "loaded" or record.desired != "loaded":
                continue
            if self.name not in record.nodes:
                continue  # a supervisor that hosts it decides
            loaded_at = record.loaded_at.replace(tzinfo=UTC).timestamp() if record.loaded_at else now
            idle_for = now - max(self.stats.last_used(model_id) or 0.0, loaded_at)
            workers = live[model_id] if live is not None and model_id in live else self.liveness.workers(model_id)
            busy = any(user_requests(w) for w in workers)
            if idle_for > limit and not busy and registry.request_unload(model_id, force=False):
                log.info("unloading the on-demand model %s: no request for %.0fs", model_id, idle_for)

    def apply(self, action: Action, records: Mapping[str, registry.ModelRecord]) -> None:
        """Carries out ``action``; ``records``: the tick's, by model id (a started worker's type is in them)."""
        child = self.children.get((action.model_id, action.replica))
        if action.kind == "start":
            record = records.get(action.model_id)
            self.start_worker(action.model_id, action.replica, action.of, record.model_type if record else "")
        elif action.kind == "stop" and child is not None:
            self._stop(child, action.force)
        elif action.kind == "forget":
            if self.liveness is not None and self.liveness.workers(action.model_id):
                return  # workers of another node still run it; forgotten once they have stopped
            registry.forget(action.model_id)
            log.info("unloaded %s", action.model_id)
        elif action.kind == "restart" and child is not None:
            log.error("restarting the worker of %s: %s", action.model_id, action.reason)
            child.process.kill()  # reaped at the next tick, and restarted as after a crash
        elif action.kind == "fail":
            log.error("%s: %s", action.model_id, action.reason)
            registry.record_failed(action.model_id, action.reason)
            for slot, each in self.children.items():
                if slot[0] == action.model_id:
                    each.process.kill()

    def shutdown(self) -> None:
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.terminate()
        deadline = time.monotonic() + 30
        for child in self.children.values():
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
        if self.nodes is not None:
            self.nodes.leave(self.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep one warm worker per loaded model.")
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between two looks at the registry (each reads MongoDB and Redis) while anything is in motion",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    from config.logs import configure_logging

    configure_logging(settings.log_level)
    mongo.connect(settings)
    client = connect_redis(settings)
    supervisor = Supervisor(
        settings,
        liveness=Liveness(client, settings.worker_heartbeat_ttl_seconds),
        nodes=NodeBeats(client, settings.worker_heartbeat_ttl_seconds),
        node=Node(
            settings.node,
            settings.model_memory_budget_gb,
            settings.node_models,
            host=socket.gethostname(),
            pid=os.getpid(),
            backend=backend(),
            started_at=time.time(),
        ),
        stats=ModelStats(client),
    )
    supervisor.beat()

    def _stop(_signum, _frame) -> None:
        supervisor.running = False

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    supervisor.seed()
    try:
        while supervisor.running:
            try:
                supervisor.tick()
            except Exception:  # noqa: BLE001 - e.g. MongoDB briefly away; try again next tick
                log.exception("supervisor tick failed")
                supervisor.resting = False
            time.sleep(supervisor.tick_seconds(args.interval))
    finally:
        supervisor.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
