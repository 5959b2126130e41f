"""Starts the real services of the platform as child processes on free ports, for the tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pymongo
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


STORES = ("redis", "mongo")
"""Services of a stack that use no database of the Mongo-wire server (the server itself among them)."""

POLL_FIRST_SECONDS = 0.02
POLL_MAX_SECONDS = 0.2


def wait_until(check: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen | None = None) -> None:
    """Returns once ``check()`` is true. It looks again after 20 ms, then twice as long each time up to 200 ms:
    most waits (a job, a hold, a worker's beat) end within a few tenths of a second, and a fixed 200 ms added a
    tenth of a second to each on average."""
    deadline = time.monotonic() + timeout
    pause = POLL_FIRST_SECONDS
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {process.returncode}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX_SECONDS)
    raise TimeoutError(f"{what} did not come up within {timeout}s")


@dataclass
class Service:
    name: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Signals the service's whole process group (a Celery worker's embedded beat is a child process), then
        kills whatever of the group is left."""
        if self.process.poll() is None:
            self._signal_group(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class Stack:
    """The services of one test session, and the environment that points processes at them."""

    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    databases_made: set[str] = field(default_factory=set)

    def start(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Service:
        if name not in STORES:
            self.make_database()
        log_path = self.workdir / f"{name}.log"
        handle = open(log_path, "ab")  # noqa: SIM115 - closed when the process ends
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **self.env, **(extra_env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        service = Service(name, process, log_path)
        self.services.append(service)
        return service

    def make_database(self) -> None:
        """Makes the collections and indexes of the stack's database (``tasks.schema``) before its first process that
        uses it starts: processes started together on a new database would otherwise each create them at once,
        which has hung SecantusDB (docs/limits.md)."""
        url = self.env.get("MONGODB_URL")
        if url is None or url in self.databases_made:
            return
        from tasks.schema import create_schema

        with pymongo.MongoClient(url, serverSelectionTimeoutMS=30000) as client:
            create_schema(client.get_default_database())
        self.databases_made.add(url)

    def start_redis(self, port: int | None = None) -> Service:
        """redis-server without persistence (a restart loses everything), on ``port`` or a free one."""
        port = port or free_port()
        service = self.start(
            "redis",
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
        )
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis(port=port)
        wait_until(client.ping, 20, "redis-server", service.process)
        return service

    def start_mongo(self, restarted: bool = False) -> Service:
        """The Mongo-wire server (mongod if installed, else SecantusDB) on a free port; ``restarted`` (the tests
        that kill the store): as the Procfile runs it, behind ``config.restart_loop`` and, for SecantusDB, with each
        write on disk before it is acknowledged (``--sync-on-commit``); the other stacks spare the fsyncs."""
        port = free_port()
        dbpath = self.workdir / "mongo"
        dbpath.mkdir()
        if shutil.which("mongod"):
            argv = ["mongod", "--port", str(port), "--bind_ip", "127.0.0.1", "--dbpath", str(dbpath)]
        else:
            argv = [
                PYTHON,
                "-m",
                "secantus",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(dbpath),
                "--log-level",
                "WARNING",
                *(["--sync-on-commit"] if restarted else []),
            ]
        loop = [PYTHON, "-m", "config.restart_loop", "mongo", "--"] if restarted else []
        service = self.start("mongo", [*loop, *argv])
        self.env["MONGODB_URL"] = f"mongodb://127.0.0.1:{port}/mlxf_test"
        wait_until(lambda: _port_open(port), 60, "the Mongo-wire server", service.process)
        return service

    def start_worker(self, model_id: str, name: str, extra_env: dict[str, str] | None = None) -> Service:
        return self.start(name, [PYTHON, "-m", "tasks.model_worker", "--model-id", model_id], extra_env)

    def start_control(
        self,
        name: str = "control",
        extra_env: dict[str, str] | None = None,
        restarted: bool = False,
        queues: str = "control,jobs,webhooks,rag,fusion",
    ) -> Service:
        """A control worker on ``queues`` (all of them unless told), with the embedded beat when it takes the
        ``control`` queue; up once it says it is ready. ``restarted``: behind ``config.restart_loop``, as the
        Procfile runs it (started again when it dies)."""
        loop = [PYTHON, "-m", "config.restart_loop", name, "--"] if restarted else []
        argv = [
            *loop,
            str(Path(PYTHON).with_name("celery")),
            "-A",
            "tasks.control_app",
            "worker",
            *(["-B", "--schedule", str(self.workdir / f"{name}-beat")] if "control" in queues.split(",") else []),
            "--queues",
            queues,
            "--pool",
            "threads",
            "--concurrency",
            "8",
            "--hostname",
            f"{name}@test",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ]
        service = self.start(name, argv, extra_env)
        wait_until(lambda: " ready." in service.log(), 60, name, service.process)
        return service

    def start_web(self, name: str = "web", extra_env: dict[str, str] | None = None) -> tuple[Service, str]:
        port = free_port()
        env = {"SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), **(extra_env or {})}
        service = self.start(
            name, [str(Path(PYTHON).with_name("gunicorn")), "-c", "web/gunicorn_conf.py", "web:create_app()"], env
        )
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{base_url}/openapi.json", timeout=2).ok, 60, name, service.process)
        return service, base_url

    def start_mcp(
        self, api_url: str, name: str = "mcp", extra_env: dict[str, str] | None = None
    ) -> tuple[Service, str]:
        """The MCP server (``python -m mlxf.mcp_server``) on a free port, calling the API at ``api_url``; its URL."""
        port = free_port()
        env = {"MCP_HOST": "127.0.0.1", "MCP_PORT": str(port), "MCP_API_URL": api_url, **(extra_env or {})}
        service = self.start(name, [PYTHON, "-m", "mlxf.mcp_server"], env)
        wait_until(lambda: _port_open(port), 60, name, service.process)
        return service, f"http://127.0.0.1:{port}/mcp"

    def stop_all(self, timeout: float = 2) -> None:
        """Stops the services that use Redis and Mongo at once, then Redis and Mongo: SIGTERM to each process
        group, SIGKILL to what is left after ``timeout``. (Stopped together with Redis, a supervisor's workers
        retried their last writes until the SIGKILL.) It ends a stack: nothing is checked after it, so nothing
        waits for a graceful exit longer than ``timeout`` (the supervisor's six workers took 5 s)."""
        running = [service for service in reversed(self.services) if service.process.poll() is None]
        clients = [service for service in running if service.name not in DATA_SERVICES]
        _stop_at_once(clients, timeout)
        _stop_at_once([service for service in running if service not in clients], timeout)
        for service in self.services:
            service._signal_group(signal.SIGKILL)


DATA_SERVICES = ("redis", "mongo")
"""The names ``start_redis`` and ``start_mongo`` give their services: the others' data, stopped last."""


def _stop_at_once(services: Sequence[Service], timeout: float) -> None:
    for service in services:
        service._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for service in services:
        try:
            service.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            service.process.kill()
            service.process.wait(5)


def catalog_with_on_demand(workdir: Path, model_ids: Sequence[str], folder: Path, idle_seconds: float) -> Path:
    """``config/models.json`` with every model started and kept warm (the shipped catalog loads the media models on
    demand), plus an on-demand chat model for each of ``model_ids``, served from ``folder``
    (unloaded after ``idle_seconds`` without a request), written in ``workdir`` for the processes'
    ``MODELS_FILE``."""
    catalog = json.loads((ROOT / "config" / "models.json").read_text())
    for entry in catalog["models"]:  # one warm model of each type, as the tests and benchmarks expect
        entry["autostart"], entry["on_demand"] = True, False
    catalog["models"] += [
        {
            "id": model_id,
            "type": "lm",
            "source": {"kind": "local-dir", "path": str(folder)},
            "context_length": 8192,
            "description": "a chat model again, loaded when a request first names it",
            "tags": ["local", "chat"],
            "on_demand": True,
            "idle_unload_s": idle_seconds,
        }
        for model_id in model_ids
    ]
    path = workdir / "models.json"
    path.write_text(json.dumps(catalog, indent=2))
    return path


def link_tree(source: Path, target: Path, copy: tuple[str, ...] = ()) -> Path:
    """``target`` as a copy of the folder ``source`` that costs no disk: each file hard-linked (copied where the
    two are on different file systems), but the files named in ``copy``, which the caller is going to change."""
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        destination = target / file.name
        destination.unlink(missing_ok=True)
        if file.name in copy:
            shutil.copy2(file, destination)
            continue
        try:
            os.link(file, destination)
        except OSError:
            shutil.copy2(file, destination)
    return target


def process_exists(pid: int) -> bool:
    """Whether a process with ``pid`` exists (still running, stopped, or not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
