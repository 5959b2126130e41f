"""Session fixtures: real redis-server, a real Mongo-wire server, real model workers and gunicorn.

Workers are started once per session; tests share them and keep prompts short.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import redis
import requests

from tests.holds import held_key, hold_key, holdable
from tests.receiver import Receiver
from tests.stack import ROOT, Service, Stack, catalog_with_on_demand, wait_until
from tests.used_keys import leaks

CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RERANK_MODEL = "mlx-fusion/ms-marco-MiniLM-L6-random"
WHISPER_MODEL = "openai/whisper-tiny.en"
VISION_MODEL = "mlx-fusion/smolvlm-tiny-random"
IMAGE_MODEL = "mlx-fusion/flux2-klein-tiny-random"
EDIT_MODEL = "mlx-fusion/flux2-klein-edit-tiny-random"
DEFAULT_MODELS = (CHAT_MODEL, EMBEDDING_MODEL, RERANK_MODEL, WHISPER_MODEL, VISION_MODEL, IMAGE_MODEL, EDIT_MODEL)
"""The catalog's autostart models: one of each type that runs here."""
CHAT_MODEL_DIR = ROOT / ".data" / "models" / "HuggingFaceTB--SmolLM2-135M-Instruct"
DOCUMENTS = ROOT / ".data" / "documents"
BASH_PDF = DOCUMENTS / "bash-doc" / "usr" / "share" / "doc" / "bash" / "bash.pdf"
PYTHON_HTML = DOCUMENTS / "python3.11-doc" / "usr" / "share" / "doc" / "python3.11" / "html"


RECONCILE_SECONDS = 1
"""The session's reconciler period (``JOB_RECONCILE_SECONDS``)."""
CONTROL_QUEUES = "control,webhooks"
WORK_QUEUES = "jobs,rag,fusion"
"""The queues of the Procfile's two control workers."""
SESSION_CALLBACK_SECRET = "session-callback-secret"
"""Signs the callbacks of jobs that bring no ``callback_secret`` (``CALLBACK_SECRET``)."""
ON_DEMAND_MODEL = "test/on-demand-chat"
ON_DEMAND_NODES_MODEL = "nodes/on-demand-chat"
ON_DEMAND_IDLE_SECONDS = 4


SESSION_FOLDER = pytest.StashKey[Path]()
"""The session's folder in the temporary directory: services' data and logs, tests' model folders."""
MIN_FREE_DISK_GB = 1.0
"""Room the session needs for what its services write (MongoDB, vectors, logs): tests' model folders are links."""


@pytest.fixture(scope="session")
def stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    free_gb = shutil.disk_usage(tempfile.gettempdir()).free / 1e9
    if free_gb < MIN_FREE_DISK_GB:
        pytest.exit(f"{free_gb:.2f} GB free in {tempfile.gettempdir()}: the suite needs {MIN_FREE_DISK_GB} GB", 1)
    workdir = Path(tempfile.mkdtemp(prefix="mlxf-test-"))
    request.config.stash[SESSION_FOLDER] = workdir
    env = {
        "DATA_DIR": str(ROOT / ".data"),
        "MODEL_ROOTS": f"{ROOT / '.data' / 'models'}:{workdir}",
        "LOG_LEVEL": "INFO",
        "REQUEST_TIMEOUT_SECONDS": "120",
        "WORKER_HEARTBEAT_TTL_SECONDS": "4",
        "WORKER_HEARTBEAT_SECONDS": "1",  # four beats per TTL: a beat late on a busy machine is not a death
        "PYTHONUNBUFFERED": "1",
        # One OpenBLAS thread per worker: the session runs a dozen model processes on a few cores, and a second
        # thread spinning beside the others' made embedding and generation slower, not faster (measured).
        "OPENBLAS_NUM_THREADS": "1",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
        "WEBHOOK_MAX_ATTEMPTS": "5",
        "CALLBACK_SECRET": SESSION_CALLBACK_SECRET,
        "JOB_RECONCILE_SECONDS": str(RECONCILE_SECONDS),
        "JOB_LOST_GRACE_SECONDS": "3",
        # Tests hold a generation between tokens with a Redis key (see ``hold``), never by betting on its length.
        "WORKER_PLUGINS": "tests.holds",
        "VECTOR_DIR": str(workdir / "vectors"),
        # The prompt cache's disk tier in the session's folder: never a run before's files, never the data dir's.
        "PROMPT_CACHE_DISK_DIR": str(workdir / "prompt-cache"),
        "PROMPT_CACHE_DISK_GB": "2",
        "RAG_MAX_FILE_BYTES": "2000000",
        # Vision tests fetch image URLs from a server on loopback; other private addresses stay refused.
        "IMAGE_URL_ALLOWED_NETWORKS": "127.0.0.0/8",
        "IMAGE_MAX_BYTES": "1000000",
        "IMAGE_FETCH_TIMEOUT_SECONDS": "2",
        "RAG_LEASE_SECONDS": "4",
        # A worker unresponsive for 8 s (SIGSTOP in test_health_probes) is restarted; a held request keeps its
        # worker busy, not unresponsive. Every worker probes at once when it starts, which is all the tests look
        # at, then every 2 minutes: Whisper's probe costs 1.5 s of CPU (a 30 s window), the image models' 0.3 s,
        # and probes every 30 s took a third of what the idle session's processes spent.
        "HEALTH_PROBE_INTERVAL_SECONDS": "120",
        "HEALTH_PROBE_MAX_AGE_SECONDS": "240",
        "HEALTH_PROBE_RESTART_SECONDS": "8",
        "CONTROL_SILENCE_SECONDS": "6",
        # The suite sends far more than a client's share; tests/test_rate_limits.py runs a web with limits on.
        "RATE_LIMITS_ENABLED": "false",
        # A stored key puts every web of the session behind keys; tests revoke theirs, seen here within 1 s.
        "API_KEY_CACHE_SECONDS": "1",
        # No model hub is reachable here: Hugging Face ids resolve in a cache the tests build (test_hub_models).
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(workdir / "hf-cache"),
        # The session's supervisor is node-a; tests/test_nodes.py runs more nodes for the models named nodes/*.
        "NODE_NAME": "node-a",
        "NODE_MODELS": "*,!nodes/*",
        # The catalog plus on-demand copies of SmolLM2, unloaded after 4 idle seconds: one for test_on_demand, one
        # that only the nodes of test_nodes may serve (and whose budgets it does not fit).
        "MODELS_FILE": str(
            catalog_with_on_demand(
                workdir, [ON_DEMAND_MODEL, ON_DEMAND_NODES_MODEL], CHAT_MODEL_DIR, ON_DEMAND_IDLE_SECONDS
            )
        ),
    }
    stack = Stack(workdir, env)
    os.environ.update(env)
    from models.prepare import main as prepare_models

    assert prepare_models(list(DEFAULT_MODELS)) == 0
    try:
        stack.start_redis()
        stack.start_mongo()
        os.environ.update(stack.env)
        yield stack
    finally:
        stack.stop_all()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The session's folder is removed after a run that passed; kept, with every service's log, after any other
    (a failure, an interruption, an error in a fixture). A session whose logs hold an API key secret its tests
    used (``tests.used_keys``) fails."""
    workdir = session.config.stash.get(SESSION_FOLDER, None)
    if workdir is None:
        return
    leaked = leaks(workdir)
    if leaked:
        print("\nAPI key secrets were logged:\n" + "\n".join(leaked))
        session.exitstatus = exitstatus = pytest.ExitCode.TESTS_FAILED
    if exitstatus == pytest.ExitCode.OK:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"\nservice logs kept in {workdir}")


RAG_COLLECTED = pytest.StashKey[bool]()
BASH_INGEST = pytest.StashKey[dict]()
BASH_INGEST_AFTER = "test_batches.py"
"""The bash manual's ingest starts with the first test of a file after this one (it kills the session's ``work``
control worker, which would run the ingest)."""


RUN_AFTER_RAG = "test_diagnostics.py"
"""Its totals hold only once the bash manual's ingest has ended: run after ``tests/test_rag.py``, it never waits."""


SESSION_LANE, OWN_LANE, LATE_SESSION_LANE = "session", "own", "late-session"
"""``make test`` runs the suite in two pytest-xdist workers (``-n 2 --dist loadgroup``), in collection order within
each lane: the session lane holds the tests that use the session's model workers and web (the ``supervisor``
fixture, which ``base_url`` needs); the own lane holds the rest: unit tests, tests of a model in the test process,
and tests that start a small stack of their own to kill or pause. Those mostly wait (for a fault to be seen, a
restart, a timeout), so the two lanes share the two cores well. The worker that ends its lane first (usually the
own lane's) then takes the late session lane (``LATE_SESSION_FILES``), starting a session stack of its own for it
if it has none.
Without ``-n``, the lanes mean nothing: one session stack serves every test."""

LATE_SESSION_FILES = (
    "test_cli.py",
    "test_health_probes.py",
    "test_many_streams.py",
    "test_media_models.py",
    "test_nodes.py",
    "test_on_demand.py",
    "test_prompt_cache_disk.py",
)
"""Session-stack tests that need no other test's state (no bash manual, no keys): a module each that loads, kills or
adds what it needs. They run in whichever worker ends its lane first (xdist gives a worker the next group when it
has at most two tests left): usually the own lane's, on a second session stack."""


IN_PROCESS_MODEL_FILES = (
    "test_batch_engine.py",
    "test_engine_preparation.py",
    "test_kv_quantized.py",
    "test_lora_batch.py",
    "test_speculative_decoding.py",
)
"""Own-lane files that compute with a model in the test process: they run last in their lane, once the session
lane's model workers have started (on two cores they slowed that start from 16 s to 46 s)."""


LATE_SESSION_MODELS = (CHAT_MODEL, EMBEDDING_MODEL)
"""The default models the late session lane's stack starts: its tests load the others they use. The catalog's other
autostart models are kept off that stack's node (``NODE_MODELS``), which spares it five workers' start and their
heartbeats."""
RUNNING_LANE = pytest.StashKey[str]()
"""The lane of the test being set up in this process (``pytest_runtest_setup``): the ``supervisor`` fixture reads it."""


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.config.stash[RUNNING_LANE] = lane_of(item)


def lane_of(item: pytest.Item) -> str:
    if "supervisor" not in getattr(item, "fixturenames", ()):
        return OWN_LANE
    return LATE_SESSION_LANE if item.path.name in LATE_SESSION_FILES else SESSION_LANE


def own_lane_place(item: pytest.Item) -> int:
    """The own lane's order: unit tests, then tests with stacks of their own, then models in the test process."""
    if lane_of(item) != OWN_LANE:
        return 1
    return 0 if "unit" in item.path.parts else 2 if item.path.name in IN_PROCESS_MODEL_FILES else 1


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.xdist_group(lane_of(item)))
    items.sort(key=own_lane_place)  # stable: the session lane keeps its order
    rag = [n for n, item in enumerate(items) if item.path.name == "test_rag.py"]
    config.stash[RAG_COLLECTED] = bool(rag)
    if rag:
        late = [item for item in items if item.path.name == RUN_AFTER_RAG]
        kept = [item for item in items if item.path.name != RUN_AFTER_RAG]
        after = max(n for n, item in enumerate(kept) if item.path.name == "test_rag.py") + 1
        items[:] = kept[:after] + late + kept[after:]


def start_bash_ingest(config: pytest.Config, base_url: str) -> dict:
    """bash.pdf (87 pages, about 500 chunks: the longest work of the session for one core) ingested as a job into
    a collection of its own, once a session; ``bash_manual`` waits for it."""
    if BASH_INGEST not in config.stash:
        collection = f"bash-{uuid.uuid4().hex[:8]}"
        accepted = requests.post(
            f"{base_url}/api/rag/ingest",
            data={"collection": collection, "async": "true", "metadata": '{"source": "debian"}'},
            files=[("files", ("bash.pdf", BASH_PDF.read_bytes()))],
            timeout=120,
        )
        assert accepted.status_code == 202, accepted.text
        config.stash[BASH_INGEST] = {"job_id": accepted.json()["job_id"], "collection": collection}
    return config.stash[BASH_INGEST]


@pytest.fixture(autouse=True)
def _bash_manual_early(request: pytest.FixtureRequest) -> None:
    """Starts the bash manual's ingest early in a session that runs ``tests/test_rag.py``, so that it runs on the
    embedding worker while other tests run, instead of holding the whole session up in test_rag (74 s here)."""
    config = request.config
    path = request.node.path
    if BASH_INGEST in config.stash or not config.stash.get(RAG_COLLECTED, False):
        return
    if "unit" in path.parts or path.name <= BASH_INGEST_AFTER or lane_of(request.node) != SESSION_LANE:
        return
    request.getfixturevalue("control_worker")
    start_bash_ingest(config, request.getfixturevalue("base_url"))


@pytest.fixture(scope="session")
def bash_manual(request: pytest.FixtureRequest, base_url: str, control_worker: Service) -> dict:
    """bash.pdf ingested once for the session: the ingest's result (as a synchronous ingest answers it)."""
    started = start_bash_ingest(request.config, base_url)
    job = wait_for_job(f"{base_url}/api/mcp", started["job_id"], timeout=600)
    assert job["status"] == "completed", job
    return {**job["result"], "collection": started["collection"]}


@pytest.fixture()
def small_stack(stack: Stack, tmp_path: Path) -> Iterator[Stack]:
    """A second, small stack to start services in: its own Redis once started (no persistence), the session's
    Mongo server in a new database of its own."""
    mongo = stack.env["MONGODB_URL"].rsplit("/", 1)[0] + f"/mlxf_small_{uuid.uuid4().hex[:8]}"
    small = Stack(tmp_path, {**stack.env, "MONGODB_URL": mongo})
    try:
        yield small
    finally:
        small.stop_all()


@pytest.fixture(scope="session")
def redis_client(stack: Stack) -> redis.Redis:
    return redis.Redis.from_url(stack.env["REDIS_URL"])


def worker_is_live(client: redis.Redis, model_id: str) -> bool:
    from models.liveness import Liveness

    return bool(Liveness(client, 4).workers(model_id))


@pytest.fixture(scope="session")
def supervisor(request: pytest.FixtureRequest, stack: Stack, redis_client: redis.Redis) -> Service:
    """The model supervisor with the catalog's default models warm (the late session lane's: ``LATE_SESSION_MODELS``);
    worker logs go to its log."""
    models, extra_env = DEFAULT_MODELS, None
    in_lanes = "PYTEST_XDIST_WORKER" in os.environ  # without -n one stack serves every test
    if in_lanes and request.config.stash.get(RUNNING_LANE, SESSION_LANE) == LATE_SESSION_LANE:
        models = LATE_SESSION_MODELS
        kept_off = ",".join(f"!{model_id}" for model_id in DEFAULT_MODELS if model_id not in models)
        extra_env = {"NODE_MODELS": f"{stack.env['NODE_MODELS']},{kept_off}"}
    service = stack.start("supervisor", [sys.executable, "-m", "models.supervisor"], extra_env)
    for model_id in models:
        wait_until(lambda m=model_id: worker_is_live(redis_client, m), 180, f"a worker for {model_id}", service.process)
    return service


@pytest.fixture(scope="session")
def base_url(stack: Stack, supervisor) -> str:
    _service, url = stack.start_web()
    return url


@pytest.fixture(scope="session")
def mcp_url(stack: Stack, base_url: str, control_worker: Service) -> str:
    """The MCP server of the session (as the Procfile's ``mcp`` process runs it), calling the session's API."""
    _service, url = stack.start_mcp(base_url)
    return url


SPARE_CHAT_MODEL = "test/spare-chat"
SPARE_CHAT_CONTEXT = 1024


@pytest.fixture(scope="session")
def spare_chat_loaded(base_url: str) -> str:
    """A second copy of the chat model, loaded once for the session (a context of 1024 tokens), for the tests that
    need one beside the session's own: two chat models at once, or a worker to kill, stop or hang. It stays
    loaded until the stack stops."""
    loaded = load_model(base_url, str(CHAT_MODEL_DIR), SPARE_CHAT_MODEL, context_length=SPARE_CHAT_CONTEXT)
    assert loaded.status_code == 200, loaded.text
    return SPARE_CHAT_MODEL


@pytest.fixture()
def spare_chat(spare_chat_loaded: str, base_url: str, redis_client: redis.Redis) -> str:
    """``SPARE_CHAT_MODEL``, loaded and served by a live worker when the test starts: a test before it may have
    killed or stopped its worker, which the supervisor restarts."""

    def serving() -> bool:
        status = requests.get(f"{base_url}/v1/models/{spare_chat_loaded}", timeout=10).json()["status"]
        return status == "loaded" and worker_is_live(redis_client, spare_chat_loaded)

    wait_until(serving, 120, f"{spare_chat_loaded} to be served")
    return spare_chat_loaded


@pytest.fixture(scope="session")
def control_worker(stack: Stack) -> Service:
    """The control workers as the Procfile runs them: ``control`` (webhook fan-out and delivery, and its embedded
    beat running the reconciler) and ``work`` (jobs, RAG, fusion), so that a flood of one cannot take the
    other's threads."""
    stack.start_control("work", queues=WORK_QUEUES)
    return stack.start_control(queues=CONTROL_QUEUES)


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture()
def rag_url(base_url: str, control_worker: Service) -> str:
    return f"{base_url}/api/rag"


@pytest.fixture()
def jobs_url(base_url: str, control_worker: Service) -> str:
    return f"{base_url}/api/mcp"


@pytest.fixture()
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0, timeout=120)


def speak(text: str, path: Path, words_per_minute: int = 130) -> bytes:
    """``text`` spoken by espeak-ng (Debian's speech synthesiser) as a WAV file: real speech for Whisper."""
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "-w", str(path), text], check=True, timeout=60
    )
    return path.read_bytes()


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def active_requests(base_url: str, model_id: str) -> int:
    stats = requests.get(f"{base_url}/v1/queue/stats", timeout=5).json()["queues"].get(model_id, {})
    return stats.get("active_requests", 0) + stats.get("queued_in_workers", 0)


def worker_pid(client: redis.Redis, model_id: str) -> int:
    from models.liveness import Liveness

    return Liveness(client, 4).workers(model_id)[0]["pid"]


def load_model(
    base_url: str, model_path: str, model_id: str | None, model_type: str = "lm", **extra
) -> requests.Response:
    """``POST /v1/models/load``; without ``model_id`` the platform names the model."""
    named = {"model_id": model_id} if model_id else {}
    return requests.post(
        f"{base_url}/v1/models/load",
        timeout=200,
        json={"model_path": model_path, "model_type": model_type, **named, **extra},
    )


def unload_model(base_url: str, model_id: str, force: bool = False) -> requests.Response:
    return requests.delete(f"{base_url}/v1/models/{model_id}/unload", params={"force": str(force).lower()}, timeout=120)


def submit_job(
    jobs_url: str, model_id: str, operation: str, job_input: dict, request_id: str | None = None, **extra
) -> requests.Response:
    body = {"model_id": model_id, "operation": operation, "input": job_input, **extra}
    headers = {"X-Request-ID": request_id} if request_id else {}
    return requests.post(f"{jobs_url}/jobs", json=body, headers=headers, timeout=30)


class Hold:
    """Holds the generation of one request (by its request ID) between two tokens until released.

    The workers of the test session load the ``tests.holds`` plug-in (``WORKER_PLUGINS``): while the key exists,
    the engine waits at its first checkpoint after the client was shown output (a streamed request: after its first
    piece of text, which a first token that is half a character is not), still answering cancellation. So a test
    keeps a request running for exactly as long as it needs, on any machine.
    """

    def __init__(self, client: redis.Redis, name: str) -> None:
        self.client = client
        self.request_id = holdable(name)
        self._hold, self._held = hold_key(self.request_id), held_key(self.request_id)
        client.set(self._hold, "1", ex=900)

    def wait_held(self, timeout: float = 120) -> None:
        """Returns once the request's client has been shown output and the request waits on this hold."""
        wait_until(lambda: self.client.exists(self._held), timeout, f"request {self.request_id} to be held")

    def is_held(self) -> bool:
        return bool(self.client.exists(self._held))

    def release(self) -> None:
        self.client.delete(self._hold)

    def release_and_wait(self, timeout: float = 60) -> None:
        """Releases the request and returns once its engine has gone on (and will not look at Redis for it)."""
        self.release()
        wait_until(lambda: not self.client.exists(self._held), timeout, f"request {self.request_id} to go on")


@pytest.fixture()
def hold(redis_client: redis.Redis) -> Iterator[Callable[[str], Hold]]:
    """``hold(name)`` makes a held request ID; every hold is released when the test ends."""
    made: list[Hold] = []

    def make(name: str) -> Hold:
        made.append(Hold(redis_client, name))
        return made[-1]

    yield make
    for one in made:
        one.release()


def job_status(jobs_url: str, job_id: str) -> dict:
    return requests.get(f"{jobs_url}/jobs/{job_id}", timeout=10).json()


def wait_for_job(
    jobs_url: str, job_id: str, statuses: tuple[str, ...] = ("completed", "failed", "cancelled"), timeout: float = 120
) -> dict:
    seen: dict = {}

    def reached() -> bool:
        seen.update(job_status(jobs_url, job_id))
        return seen.get("status") in statuses

    wait_until(reached, timeout, f"job {job_id} to reach {statuses} (last: {seen.get('status')})")
    return seen
