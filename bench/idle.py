"""The stack at rest: per process, CPU and resident memory over a minute of idle after a warm-up, for the stack
``make run`` starts (the Procfile's processes, the catalog as shipped) and for one with every catalog model warm.

No peer runs beside it: ``mlx_lm.server`` and Ollama idle at about 0 % of a core (their servers do nothing
between requests), which is the figure to compare with.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import redis
import requests
from openai import OpenAI

from bench import progress
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, DATA_DIR, EMBEDDING_MODEL, ROOT
from bench.report import SectionResult, Table
from bench.stack import STACK_ENV
from models.liveness import Liveness
from tests.stack import Service, Stack, free_port, wait_until

NAME = "idle"
TITLE = "The stack at rest: CPU and resident memory per process"
IDLE_SECONDS = 60.0
SETTLE_SECONDS = 20.0
"""After the warm-up requests: the workers' first health probes and the processes' start-up work end."""

PYTHON = sys.executable
CELERY = str(Path(PYTHON).with_name("celery"))


def _loop(name: str, argv: list[str]) -> list[str]:
    """``argv`` behind ``config.restart_loop``, as the Procfile runs every process."""
    return [PYTHON, "-m", "config.restart_loop", name, "--", *argv]


def _control(workdir: Path, name: str, queues: str, concurrency: int, beat: bool) -> list[str]:
    return _loop(
        name,
        [
            CELERY,
            "-A",
            "tasks.control_app",
            "worker",
            *(["-B", "--schedule", str(workdir / "celerybeat-schedule")] if beat else []),
            "--queues",
            queues,
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{name}-idle@%h",
            "--heartbeat-interval",
            "10",
            "--without-gossip",
            "--without-mingle",
            "--loglevel",
            "INFO",
        ],
    )


def all_warm_catalog(workdir: Path) -> Path:
    """The shipped catalog with every model started at once and kept warm (none on demand)."""
    catalog = json.loads((ROOT / "config" / "models.json").read_text())
    for entry in catalog["models"]:
        entry["autostart"], entry["on_demand"] = True, False
    path = workdir / "models.json"
    path.write_text(json.dumps(catalog, indent=2))
    return path


def start_procfile_stack(workdir: Path, models_file: Path | None) -> tuple[Stack, str, list[str]]:
    """The Procfile's processes on free ports (Redis and the Mongo-wire server without ``restart_loop``); the API's
    URL and the models it keeps warm."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        **STACK_ENV,
        "VECTOR_DIR": str(workdir / "vectors"),
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        **({"MODELS_FILE": str(models_file)} if models_file else {}),
    }
    stack = Stack(workdir, env)
    stack.start_redis()
    stack.start_mongo()
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    supervisor = stack.start("models", _loop("models", [PYTHON, "-m", "models.supervisor"]))
    catalog = json.loads(Path(models_file or ROOT / "config" / "models.json").read_text())["models"]
    warm = [entry["id"] for entry in catalog if entry.get("autostart")]
    for model_id in warm:
        progress.say(f"waiting for a warm worker of {model_id}")
        alive = lambda m=model_id: bool(Liveness(client, 6).workers(m))  # noqa: E731
        wait_until(alive, 300, f"a worker of {model_id}", supervisor.process)
    _web, base_url = stack.start_web()
    stack.start("control", _control(workdir, "control", "control,webhooks", 4, beat=True))
    stack.start("work", _control(workdir, "work", "jobs,rag,fusion", 8, beat=False))
    stack.start("flower", _loop("flower", [PYTHON, "-m", "tasks.flower_app", "--port", str(free_port())]))
    mcp_env = {"MCP_PORT": str(free_port()), "MCP_API_URL": base_url}
    stack.start("mcp", _loop("mcp", [PYTHON, "-m", "mlxf.mcp_server"]), mcp_env)
    wait_until(lambda: requests.get(f"{base_url}/health", timeout=5).ok, 120, "a healthy /health")
    return stack, base_url, warm


def warm_up(base_url: str) -> None:
    """What a person does first: a chat answer and an embedding."""
    client = OpenAI(base_url=f"{base_url}/v1", api_key="none")
    client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    client.embeddings.create(model=EMBEDDING_MODEL, input=["warm-up"])


def _label(service: Service, process: psutil.Process) -> str:
    """A process by its role: the service's name, the model id of a model worker, the wrapper of a service."""
    try:
        argv = process.cmdline()
    except psutil.Error:
        return service.name
    if "--model-id" in argv:
        return f"worker {argv[argv.index('--model-id') + 1]}"
    if "config.restart_loop" in argv and process.pid == service.process.pid:
        return f"{service.name} (restart loop)"
    return service.name


def _processes(stack: Stack) -> dict[int, tuple[str, psutil.Process]]:
    found: dict[int, tuple[str, psutil.Process]] = {}
    for service in stack.services:
        try:
            root = psutil.Process(service.process.pid)
            for process in [root, *root.children(recursive=True)]:
                found[process.pid] = (_label(service, process), process)
        except psutil.Error:
            continue
    return found


def _cpu_seconds(process: psutil.Process) -> float | None:
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def measure_idle(stack: Stack, seconds: float) -> list[dict[str, object]]:
    """Per role: processes, CPU % of one core over ``seconds`` of idle, resident memory (MiB) at the end."""
    before = {pid: (label, proc, _cpu_seconds(proc)) for pid, (label, proc) in _processes(stack).items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    rows: dict[str, dict[str, float]] = {}
    for label, process, cpu_before in before.values():
        cpu_after = _cpu_seconds(process)
        try:
            rss = process.memory_info().rss
        except psutil.Error:
            continue
        if cpu_before is None or cpu_after is None:
            continue
        row = rows.setdefault(label, {"processes": 0, "cpu": 0.0, "rss": 0.0})
        row["processes"] += 1
        row["cpu"] += (cpu_after - cpu_before) / elapsed * 100
        row["rss"] += rss / 2**20
    return [
        {"process": label, "count": int(row["processes"]), "cpu_percent": row["cpu"], "rss_mib": row["rss"]}
        for label, row in sorted(rows.items(), key=lambda item: -item[1]["cpu"])
    ]


def _table(title: str, measured: list[dict[str, object]]) -> Table:
    table = Table(title, ["process", "processes", "CPU % of one core", "resident MiB"])
    for row in measured:
        table.rows.append([row["process"], row["count"], row["cpu_percent"], row["rss_mib"]])
    table.rows.append(
        [
            "all",
            sum(int(r["count"]) for r in measured),
            sum(float(r["cpu_percent"]) for r in measured),
            sum(float(r["rss_mib"]) for r in measured),
        ]
    )
    return table


def run(context: BenchContext) -> SectionResult:
    seconds = 10.0 if context.options.quick else IDLE_SECONDS
    result = SectionResult(NAME, TITLE)
    for name, title in (("default", "the stack `make run` starts"), ("all-warm", "every catalog model warm")):
        workdir = context.log_dir / f"idle-{name}"
        workdir.mkdir(parents=True, exist_ok=True)
        models_file = all_warm_catalog(workdir) if name == "all-warm" else None
        progress.say(f"starting {title} (logs: {workdir})")
        stack, base_url, warm = start_procfile_stack(workdir, models_file)
        try:
            warm_up(base_url)
            progress.say(f"settling for {SETTLE_SECONDS:.0f}s, then {seconds:.0f}s of idle measured")
            time.sleep(SETTLE_SECONDS)
            measured = measure_idle(stack, seconds)
        finally:
            stack.stop_all()
        result.tables.append(_table(f"{title}: {len(warm)} models warm, {seconds:.0f} s idle", measured))
        result.raw[name] = {"warm_models": warm, "seconds": seconds, "processes": measured}
    result.notes.append(
        f"Each stack on free ports with the Procfile's processes (honcho itself not counted), {SETTLE_SECONDS:.0f} s "
        "after one chat answer and one embedding; CPU is user + system time over the idle span, resident memory "
        f"(RSS) at its end. Models from {DATA_DIR / 'models'}."
    )
    return result
