"""The one typed settings object, read from the environment.

Variable names and defaults of the provider contract (``MODEL_PATH``,
``SERVER_PORT``, ...) are kept; the rest are this platform's own.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("settings_environ", default=None)
"""The mapping ``Settings.from_env`` reads instead of ``os.environ`` while it builds an instance."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be a boolean (true/false, yes/no, on/off, 1/0)")


def _split_roots(raw: str) -> list[Path]:
    """``MODEL_ROOTS``: folders separated by ':'."""
    return [Path(part) for part in raw.split(":") if part]


def _split_networks(raw: str) -> list[str]:
    """``WEBHOOK_ALLOWED_NETWORKS``: networks separated by ','."""
    return [part.strip() for part in raw.split(",") if part.strip()]


class _EnvSource(EnvSettingsSource):
    """Environment variables: the mapping given to ``Settings.from_env``, else ``os.environ``."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = _ENVIRON.get()
        if environ is None:
            return super()._load_env_vars()
        return {name if self.case_sensitive else name.lower(): value for name, value in environ.items()}


class Settings(BaseSettings):
    """Every setting of every process; each field is read from the env var of its upper-cased name."""

    redis_url: str = "redis://127.0.0.1:6380/0"
    mongodb_url: str = "mongodb://127.0.0.1:27018/mlx_fusion"
    data_dir: Path = Path(".data")
    models_file: Path = Path(__file__).with_name("models.json")

    # Provider-contract variables (seed 000): one extra model given by path.
    model_path: str = ""
    model_type: str = "lm"
    server_host: str = "127.0.0.1"
    """Where the API listens: loopback unless told; another address needs API keys or ``ALLOW_UNAUTHENTICATED``."""
    server_port: int = 8000
    mcp_host: str = "127.0.0.1"
    """Where the MCP server (``python -m mlxf.mcp_server``) listens: loopback unless told; another address only when
    the API asks for keys, or with ``ALLOW_UNAUTHENTICATED``."""
    mcp_port: int = 8001
    mcp_api_url: str = ""
    """The API the MCP server calls with each caller's key; empty: this machine's (``SERVER_HOST``, ``SERVER_PORT``)."""
    max_concurrency: int = 1
    context_length: int = 32768
    mlx_warmup: bool = True
    autostart_catalog: bool = True
    """Start the catalog's autostart models; the launcher turns it off when given one model."""

    default_chat_model: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    default_embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"

    model_roots: str = ""
    """Folders (separated by ':') under which the load API may read local models; empty means the data dir's models."""
    model_memory_budget_gb: float = 0.0
    """Memory the models of this node may hold together; 0 means no budget. Least-recently-used idle models on the
    node make room."""
    weights_format: Literal["", "float32", "float16", "q8", "q4"] = ""
    """Weights of the catalog's converted models (float32, float16, q8 or q4); empty: the catalog entry's format
    for the platform, float16 on a CUDA node."""
    node_name: str = ""
    """This machine's node: its supervisor and workers carry the name; empty means the host name."""
    node_models: str = "*"
    """The models this node may serve, separated by ',': model id patterns (``mlx-community/*``), ``type:<model
    type>``, and ``!`` before either to exclude; a model is served when a pattern matches and no exclusion does."""
    load_timeout_seconds: float = 180.0
    unload_timeout_seconds: float = 90.0
    request_timeout_seconds: float = 300.0
    """Deadline of a synchronous or streamed OpenAI call, queue wait included."""
    worker_heartbeat_seconds: float = 2.0
    """How often a model worker beats at rest; a change of its engine (a request taken or ended) beats at once."""
    worker_heartbeat_ttl_seconds: float = 6.0
    """A worker not heard from for this long is taken as gone."""
    stream_maxlen: int = 10000
    stream_ttl_seconds: int = 600
    web_threads: int = 320
    """Threads of a web process: each open stream holds one while it waits on Redis (cheap), so 256 streams leave
    room for ``/health`` and ``/metrics``."""
    log_level: str = "INFO"
    redis_socket_timeout_seconds: float = 10.0
    """Longest a Redis call may wait on the network (blocking reads wait less than this)."""
    engine_stall_seconds: float = 120.0
    """A worker whose engine has work but has made no progress (no token, no step) for this long is stalled:
    ``/health`` says so, the supervisor restarts it, and its jobs' leases are no longer renewed."""
    idle_unload_seconds: float = 600.0
    """An on-demand catalog model (``"on_demand": true``) without a request for this long is unloaded, unless its
    entry sets ``idle_unload_s``."""
    health_probe_interval_seconds: float = 45.0
    """How long a model worker may answer nothing before it runs a tiny real call of its model through its own Celery
    queue (at most half of ``HEALTH_PROBE_MAX_AGE_SECONDS``)."""
    health_probe_max_age_seconds: float = 90.0
    """A worker counts as healthy while its last probe answered within this long (or its engine is busy serving
    others and not stalled); past it ``/health`` shows the model ``unresponsive``."""
    health_probe_restart_seconds: float = 120.0
    """The supervisor restarts a worker that has been unresponsive (or silent while its process runs) this long."""
    engine_kv_budget_gb: float = 4.0
    """KV-cache memory a worker's batch may hold; a request that cannot fit alone is 503 ``insufficient_vram``,
    one that cannot fit beside the others waits."""
    prompt_cache_entries: int = 16
    """Prompts whose KV cache a worker keeps for reuse (least recently used dropped first); 0 turns it off."""
    prompt_cache_gb: float = 1.0
    prompt_cache_disk_gb: float = 10.0
    """The prompt cache's disk tier: what the folder (all models' caches together) may hold, least recently used
    deleted first; 0 turns the tier off."""
    prompt_cache_disk_min_tokens: int = 1024
    """Prompts (with their answer) at least this long are also written to the disk tier."""
    prompt_cache_disk_dir: Path | None = None
    """The disk tier's folder, shared by the replicas on one node; unset means the data dir's ``prompt-cache``."""
    prefill_step_size: int = 512
    """Prompt tokens computed per batch step: a long prompt joins in chunks instead of stalling the others."""
    background_rows_beside_interactive: int = 0
    """Rows that background work (batch lines, ``low`` jobs) keeps in a model's batch while an interactive request
    or a more urgent job runs or waits there (and for 2 s after); the rest give way, K/V kept, and go on once it is
    done. 0: the batch belongs to interactive work while there is any."""
    speculative_draft_tokens: int = 4
    """Speculative decoding inside the batch: the most tokens a row drafts from its own prompt and answer and has
    checked in one step (rows whose drafts keep failing stop drafting); 0 turns it off."""
    worker_plugins: str = ""
    """Modules, comma-separated, that each model worker imports at start and whose ``install(runtime)`` it calls:
    a plug-in may add engine checkpoint hooks (the test session holds generations with ``tests.holds``)."""
    openblas_library: str = ""
    """Path of OpenBLAS to preload into model workers on Linux; empty means look in the usual places."""

    job_queue_limit: int = 1000
    """Jobs that may wait per model; one more is refused with 429 ``queue_full``."""
    job_max_attempts: int = 3
    """Runs a job gets when its worker dies under it; then it fails with the reason."""
    job_reconcile_seconds: float = 10.0
    """How often the control worker looks for jobs the broker lost or whose worker died. A job of a worker that
    died is queued again at the second look that finds the worker silent, so within a TTL and two periods."""
    job_lost_grace_seconds: float = 10.0
    job_lease_seconds: float = 30.0
    """A running job's lease: its worker renews it while the engine makes progress; the reconciler takes back a
    job whose lease ran out (queued again, or failed after ``JOB_MAX_ATTEMPTS``)."""
    job_timeout_seconds: float = 3600.0
    """Longest a job may run on the engine; then it fails with ``job_timeout``."""
    model_loading_deadline_seconds: float = 600.0
    """A model still ``loading`` after this long is marked failed (its worker is stopped)."""
    delivery_body_max_bytes: int = 262144
    """Largest webhook body stored and sent; a bigger job result is left out (the receiver reads it from the API)."""
    """How long a queued job may be absent from the broker before it is enqueued again."""
    webhook_allowed_networks: str = ""
    """Comma-separated networks (e.g. ``127.0.0.0/8,::1/128``) webhooks may reach although not public."""
    webhook_max_attempts: int = 8
    webhook_retry_base_seconds: float = 2.0
    """First retry delay of a failed delivery; it doubles each attempt (with jitter) up to the maximum."""
    webhook_retry_max_seconds: float = 600.0
    webhook_timeout_seconds: float = 10.0
    callback_secret: str = ""
    """Signs ``callback_url`` deliveries of jobs that bring no ``callback_secret`` of their own."""

    api_keys: str = ""
    """Comma-separated admin keys; with these or stored keys (``python -m config.keys``), every ``/v1``, ``/api``,
    ``/internal`` and ``/admin`` route needs a key."""
    health_requires_key: bool = False
    """With ``API_KEYS`` set, ``/health`` needs a key too (open to probes by default)."""
    allow_unauthenticated: bool = False
    """Let the web listen on a non-loopback address with no key at all (neither ``API_KEYS`` nor a stored key)."""
    api_key_cache_seconds: float = 5.0
    """How long a web process trusts what it read of a stored key (a revoke elsewhere takes effect within it)."""

    weaviate_url: str = ""
    """Weaviate server (e.g. ``http://127.0.0.1:8080``) holding RAG vectors; empty means the embedded LanceDB store
    under the data dir's ``vectors``."""
    weaviate_api_key: str = ""
    """API key sent to Weaviate; empty means none."""
    weaviate_grpc_port: int = 50051
    """Weaviate's gRPC port on the host of ``WEAVIATE_URL`` (the client v4 queries over gRPC)."""
    vector_dir: Path | None = None
    """The embedded vector store's folder; unset means the data dir's ``vectors``."""
    image_max_bytes: int = 20 * 1024 * 1024
    """Largest image a chat request's ``image_url`` or an image edit's upload may be (400 / 413 beyond it)."""
    image_max_count: int = 8
    """Most images one chat request may carry."""
    image_fetch_timeout_seconds: float = 10.0
    """Time allowed to fetch one http(s) ``image_url``, redirects included."""
    image_url_allowed_networks: str = ""
    """Comma-separated networks ``image_url`` fetches may reach although not public (none by default)."""
    image_url_ttl_seconds: int = 3600
    """How long an image answered with ``response_format=url`` can be downloaded."""
    metrics_requires_key: bool = False
    """With ``API_KEYS``, ``/metrics`` needs a key too (open by default, for Prometheus)."""
    deprecated_routes: str = ""
    """Routes being retired, ``/path/prefix=YYYY-MM-DD`` comma-separated: they answer ``X-API-Deprecated`` and
    ``X-API-Sunset``."""
    rate_limits_enabled: bool = True
    """Per-client limits on the platform's API groups (specification section 8)."""
    rate_limit_models: str = "10/minute"
    """Model management: load, unload, warm-up, info, stats (the OpenAI model reads are not limited)."""
    rate_limit_fusion: str = "60/minute"
    rate_limit_rag: str = "30/minute"
    rate_limit_jobs: str = "100/minute"
    """MCP jobs and webhooks (reads of jobs have their own limit: ``RATE_LIMIT_JOB_READS``)."""
    rate_limit_job_reads: str = "3000/minute"
    """Reads of MCP jobs (``GET /api/mcp/jobs``, ``/jobs/{id}``, ``/jobs/{id}/events``): clients poll them."""
    fusion_timeout_seconds: float = 600.0
    """How long ``POST /api/fusion/orchestrate`` waits for a workflow (an ``async`` run waits as a job)."""
    audio_max_file_bytes: int = 25 * 1024 * 1024
    """Largest audio file ``POST /v1/audio/transcriptions`` takes (413 beyond it), OpenAI's limit."""
    rag_max_file_bytes: int = 10 * 1024 * 1024
    """Largest file ``POST /api/rag/ingest`` takes (413 beyond it)."""
    rag_max_files: int = 20
    """Most files one ingest request may carry."""
    rag_embed_batch: int = 8
    """Chunks sent to the embedding model in one call during an ingest. An interactive embedding request waits for
    the call running when it comes: 8 chunks of all-MiniLM-L6-v2 take about 2 s here, 64 took 19 s, at the same
    chunks a second (measured 2026-12-05, 2 cores)."""
    rag_lease_seconds: float = 30.0
    """An ingest or delete that has not renewed its lease for this long is taken as dead and undone (or finished)
    by the reconciler."""
    rag_staged_ttl_seconds: float = 86400.0
    """How long the files of an ingest job (``async=true``) wait in Redis for the job to run."""
    rag_ingest_timeout_seconds: float = 1800.0
    """Longest one ingest request may run."""
    control_silence_seconds: float = 15.0
    """A RAG task that sent nothing for this long (it sends a beat every 3 s) is taken as lost: its caller gets a
    503 ``worker_lost``."""

    model_config = SettingsConfigDict(
        frozen=True,
        case_sensitive=False,
        env_prefix="",
        env_file=None,
        secrets_dir=None,
        extra="forbid",
        protected_namespaces=(),
        use_attribute_docstrings=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword values, then environment variables; no ``.env`` file, no secrets directory."""
        return init_settings, _EnvSource(settings_cls)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` win over both.

        A bad value raises ``ValueError`` naming its environment variable (``SERVER_PORT: ...``).
        """
        token = _ENVIRON.set(environ)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ValueError("; ".join(_describe(exc))) from None
        finally:
            _ENVIRON.reset(token)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans(cls, value: Any, info: ValidationInfo) -> Any:
        """Booleans as before: true/false, yes/no, on/off, 1/0 in any case; empty is false."""
        if isinstance(value, str) and info.field_name and cls.model_fields[info.field_name].annotation is bool:
            return _parse_bool(value)
        return value

    @field_validator("webhook_allowed_networks", "image_url_allowed_networks")
    @classmethod
    def _webhook_allowed_networks(cls, value: str) -> str:
        """Every entry must be an IP network (host bits allowed, as ``tasks.urls`` reads them)."""
        for network in _split_networks(value):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not an IP network (such as 127.0.0.0/8 or ::1/128)") from None
        return value

    @property
    def node(self) -> str:
        return self.node_name or socket.gethostname()

    @property
    def api_url(self) -> str:
        """``MCP_API_URL``, else the API of this machine (its loopback address when it listens on every address)."""
        if self.mcp_api_url:
            return self.mcp_api_url.rstrip("/")
        host = "127.0.0.1" if self.server_host in ("0.0.0.0", "", "::") else self.server_host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.server_port}"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def prompt_cache_folder(self) -> Path:
        return self.prompt_cache_disk_dir or self.data_dir / "prompt-cache"

    @property
    def allowed_model_roots(self) -> list[Path]:
        roots = _split_roots(self.model_roots) or [self.models_dir]
        return [root.expanduser().resolve() for root in roots]

    @property
    def api_key_list(self) -> list[str]:
        return [key.strip() for key in self.api_keys.split(",") if key.strip()]

    @property
    def worker_plugin_modules(self) -> list[str]:
        return [name.strip() for name in self.worker_plugins.split(",") if name.strip()]

    @property
    def webhook_networks(self) -> list[str]:
        return _split_networks(self.webhook_allowed_networks)

    @property
    def image_url_networks(self) -> list[str]:
        return _split_networks(self.image_url_allowed_networks)

    @property
    def database_name(self) -> str:
        tail = self.mongodb_url.rsplit("/", 1)[-1].split("?", 1)[0]
        return tail or "mlx_fusion"


def _describe(error: ValidationError) -> Iterator[str]:
    """Each problem of ``error`` prefixed with the environment variable of its field."""
    for problem in error.errors(include_url=False):
        name = str(problem["loc"][0]).upper() if problem["loc"] else "SETTINGS"
        message = problem["msg"].removeprefix("Value error, ")
        yield f"{name}: {message} (got {problem['input']!r})"
