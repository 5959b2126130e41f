"""The model supervisor: keeps exactly one warm worker process per model the registry wants loaded.

``python -m models.supervisor`` seeds the registry with the catalog's autostart
models (and ``MODEL_PATH``), then every tick starts a worker for each model
desired ``loaded`` that has none, restarts workers that died (with a limit, so
a model that crashes on every start ends ``failed``), and stops the workers of
models desired ``unloaded`` (SIGTERM lets Celery finish running requests;
``force`` kills at once) before forgetting them.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime

from config.redis_client import connect_redis
from config.settings import Settings
from models import registry
from models.catalog import load_catalog, served_path
from models.liveness import SERVING_VERDICTS, Liveness, probe_verdict
from models.stats import ModelStats

log = logging.getLogger("models.supervisor")

WORKER_MODULE = "tasks.model_worker"
"""The worker process the supervisor starts (``python -m``): the Celery side's bootstrap of one model."""
EXIT_LOAD_FAILED = 3
"""Exit status of a worker whose model failed to load: the supervisor does not restart it."""
EXIT_UNKNOWN_MODEL = 4
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 120.0
GRACEFUL_STOP_SECONDS = 60.0


@dataclass(frozen=True)
class Action:
    kind: str
    """``start`` or ``stop`` a worker, ``forget`` an unloaded record, ``restart`` a stalled worker, ``fail`` a model."""
    model_id: str
    force: bool = False
    reason: str = ""


def plan(
    records: list[registry.ModelRecord],
    children: dict[str, bool],
    failing: Mapping[str, str],
    moment: datetime,
    loading_deadline_seconds: float,
) -> list[Action]:
    """What one tick does, decided from the registry and the workers (no side effects).

    ``children`` maps each model with a worker process to whether a stop was already sent to it;
    ``failing`` maps the models whose worker must be restarted (see ``Supervisor.failing_workers``) to why.
    """
    actions: list[Action] = []
    wanted = {record.model_id for record in records}
    for record in records:
        model_id = record.model_id
        has_child = model_id in children
        if record.desired == "unloaded":
            actions.append(
                Action("stop", model_id, force=record.force_unload) if has_child else Action("forget", model_id)
            )
            continue
        since = record.updated_at
        if record.status == "loading" and since is not None:
            since = since if since.tzinfo else since.replace(tzinfo=UTC)
            if (moment - since).total_seconds() > loading_deadline_seconds:
                reason = f"the model did not finish loading within {loading_deadline_seconds:g}s"
                actions.append(Action("fail", model_id, reason=reason))
                continue
        if has_child and model_id in failing and record.status == "loaded":
            actions.append(Action("restart", model_id, reason=failing[model_id]))
        elif not has_child and record.status in ("loading", "loaded"):
            actions.append(Action("start", model_id))
    actions.extend(Action("stop", model_id) for model_id in children if model_id not in wanted)
    return actions


@dataclass
class Child:
    model_id: str
    process: subprocess.Popen
    stop_sent_at: float | None = None
    unresponsive_since: float | None = None
    """Since when (monotonic) the worker has neither answered its health probes nor been busy serving."""


@dataclass
class Supervisor:
    settings: Settings
    children: dict[str, Child] = field(default_factory=dict)
    liveness: Liveness | None = None
    crashes: dict[str, deque] = field(default_factory=dict)
    stats: ModelStats | None = None
    """Last use of each model (for unloading idle on-demand models)."""
    on_demand: dict[str, float] | None = None
    """Idle seconds of each on-demand catalog model, read from the catalog once (as ``seed`` reads it)."""
    running: bool = True

    def seed(self) -> None:
        """Registers the autostart models; a failed one is tried again at every supervisor start."""
        for spec in load_catalog(self.settings).values():
            if not spec.autostart:
                continue
            registered = registry.request_catalog_load(spec, served_path(self.settings, spec))
            if not registered:
                registry.record_restarting(spec.model_id)
            log.info("autostart %s (%s)", spec.model_id, "registered" if registered else "already registered")

    def start_worker(self, model_id: str) -> None:
        argv = [sys.executable, "-m", WORKER_MODULE, "--model-id", model_id, "--supervisor-pid", str(os.getpid())]
        self.children[model_id] = Child(model_id, subprocess.Popen(argv))
        log.info("started a worker for %s (pid %d)", model_id, self.children[model_id].process.pid)

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
        del self.children[child.model_id]
        if self.liveness is not None:
            self.liveness.forget_process(child.model_id, child.process.pid, socket.gethostname())
        if record is None or record.desired != "loaded":
            return
        if code == EXIT_LOAD_FAILED:
            log.error("the model %s failed to load; not restarting it", child.model_id)
            return
        if self._crashed_too_often(child.model_id):
            registry.record_failed(
                child.model_id,
                f"the worker exited {MAX_RESTARTS + 1} times "
                f"within {RESTART_WINDOW_SECONDS:.0f}s (last exit status {code})",
            )
            return
        log.warning("the worker of %s exited with %s; restarting it", child.model_id, code)
        registry.record_restarting(child.model_id)

    def _stop(self, child: Child, force: bool) -> None:
        if child.stop_sent_at is None:
            child.process.send_signal(signal.SIGKILL if force else signal.SIGTERM)
            child.stop_sent_at = time.monotonic()
            log.info("stopping the worker of %s (%s)", child.model_id, "force" if force else "graceful")
        elif time.monotonic() - child.stop_sent_at > GRACEFUL_STOP_SECONDS:
            child.process.kill()

    def failing_workers(self, records: dict[str, registry.ModelRecord]) -> dict[str, str]:
        """The loaded models whose worker (a child of this supervisor) must be restarted, and why: its engine
        reports no progress, or it has been unresponsive (its health probes unanswered while it is not busy, or
        its heartbeat silent while its process runs) for ``HEALTH_PROBE_RESTART_SECONDS``."""
        if self.liveness is None:
            return {}
        failing = {}
        now, wall = time.monotonic(), time.time()
        for model_id, child in self.children.items():
            record = records.get(model_id)
            if record is None or record.status != "loaded" or child.stop_sent_at is not None:
                child.unresponsive_since = None
                continue
            report = next((r for r in self.liveness.workers(model_id) if r.get("pid") == child.process.pid), None)
            if report is not None and report.get("stalled"):
                failing[model_id] = "its engine stopped making progress"
                continue
            verdict = probe_verdict(report, wall, self.settings.health_probe_max_age_seconds)
            if verdict in SERVING_VERDICTS:
                child.unresponsive_since = None
                continue
            child.unresponsive_since = child.unresponsive_since or now
            silent_for = now - child.unresponsive_since
            if silent_for > self.settings.health_probe_restart_seconds:
                what = "its heartbeat stopped while its process runs" if report is None else "its health probes"
                failing[model_id] = f"unresponsive for {silent_for:.0f}s ({what})"
        return failing

    def tick(self) -> None:
        records = {record.model_id: record for record in registry.list_records()}
        for child in list(self.children.values()):
            if child.process.poll() is not None:
                self._reap(child, records.get(child.model_id))
        actions = plan(
            list(records.values()),
            {model_id: child.stop_sent_at is not None for model_id, child in self.children.items()},
            self.failing_workers(records),
            datetime.now(UTC),
            self.settings.model_loading_deadline_seconds,
        )
        for action in actions:
            self.apply(action)
        self.unload_idle(records)

    def unload_idle(self, records: dict[str, registry.ModelRecord]) -> None:
        """Unloads the on-demand models (catalog ``"on_demand": true``) no request has used for their idle time."""
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
            loaded_at = record.loaded_at.replace(tzinfo=UTC).timestamp() if record.loaded_at else now
            idle_for = now - max(self.stats.last_used(model_id) or 0.0, loaded_at)
            busy = any(w.get("active") or w.get("queued") for w in self.liveness.workers(model_id))
            if idle_for > limit and not busy and registry.request_unload(model_id, force=False):
                log.info("unloading the on-demand model %s: no request for %.0fs", model_id, idle_for)

    def apply(self, action: Action) -> None:
        child = self.children.get(action.model_id)
        if action.kind == "start":
            self.start_worker(action.model_id)
        elif action.kind == "stop" and child is not None:
            self._stop(child, action.force)
        elif action.kind == "forget":
            registry.forget(action.model_id)
            log.info("unloaded %s", action.model_id)
        elif action.kind == "restart" and child is not None:
            log.error("restarting the worker of %s: %s", action.model_id, action.reason)
            child.process.kill()  # reaped at the next tick, and restarted as after a crash
        elif action.kind == "fail":
            log.error("%s: %s", action.model_id, action.reason)
            registry.record_failed(action.model_id, action.reason)
            if child is not None:
                child.process.kill()

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Keep one warm worker per loaded model.")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between two looks at the registry")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    from config.logs import configure_logging

    configure_logging(settings.log_level)
    registry.connect(settings)
    client = connect_redis(settings)
    supervisor = Supervisor(
        settings, liveness=Liveness(client, settings.worker_heartbeat_ttl_seconds), stats=ModelStats(client)
    )

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
            time.sleep(args.interval)
    finally:
        supervisor.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
