"""The one typed settings object, read from the environment.

Variable names and defaults of the provider contract (``MODEL_PATH``,
``SERVER_PORT``, ...) are kept; the rest are this platform's own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{name} must be a boolean (true/false), got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Every setting of every process; each field is read from the env var of its upper-cased name."""

    redis_url: str = "redis://127.0.0.1:6380/0"
    mongodb_url: str = "mongodb://127.0.0.1:27018/mlx_fusion"
    data_dir: Path = Path(".data")
    models_file: Path = Path(__file__).with_name("models.json")

    # Provider-contract variables (seed 000): one extra model given by path.
    model_path: str = ""
    model_type: str = "lm"
    server_host: str = "0.0.0.0"
    server_port: int = 8000
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
    """Memory all loaded models may hold together; 0 means no budget. Least-recently-used idle models make room."""
    load_timeout_seconds: float = 180.0
    unload_timeout_seconds: float = 90.0
    request_timeout_seconds: float = 300.0
    """Deadline of a synchronous or streamed OpenAI call, queue wait included."""
    worker_heartbeat_seconds: float = 1.0
    worker_heartbeat_ttl_seconds: float = 6.0
    """A worker not heard from for this long is taken as gone."""
    stream_maxlen: int = 10000
    stream_ttl_seconds: int = 600
    web_threads: int = 32
    log_level: str = "INFO"
    redis_socket_timeout_seconds: float = 10.0
    """Longest a Redis call may wait on the network (blocking reads wait less than this)."""
    engine_stall_seconds: float = 120.0
    """A worker whose engine has work but has made no progress (no token, no step) for this long is stalled:
    ``/health`` says so, the supervisor restarts it, and its jobs' leases are no longer renewed."""
    engine_test_holds: bool = False
    """Tests only: the engine waits between tokens while the Redis key ``mlxf:hold:<request id>`` exists."""
    openblas_library: str = ""
    """Path of OpenBLAS to preload into model workers on Linux; empty means look in the usual places."""

    job_queue_limit: int = 1000
    """Jobs that may wait per model; one more is refused with 429 ``queue_full``."""
    job_max_attempts: int = 3
    """Runs a job gets when its worker dies under it; then it fails with the reason."""
    job_reconcile_seconds: float = 5.0
    """How often the control worker looks for jobs the broker lost or whose worker died."""
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); ``overrides`` win over both."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = env.get(spec.name.upper())
            if raw is None:
                continue
            values[spec.name] = _coerce(spec.name.upper(), spec.type, raw)
        values.update(overrides)
        return cls(**values)

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def allowed_model_roots(self) -> list[Path]:
        roots = [Path(p) for p in self.model_roots.split(":") if p] or [self.models_dir]
        return [root.expanduser().resolve() for root in roots]

    @property
    def webhook_networks(self) -> list[str]:
        return [part.strip() for part in self.webhook_allowed_networks.split(",") if part.strip()]

    @property
    def database_name(self) -> str:
        tail = self.mongodb_url.rsplit("/", 1)[-1].split("?", 1)[0]
        return tail or "mlx_fusion"


def _coerce(name: str, type_name: object, raw: str) -> object:
    kind = str(type_name)
    try:
        if kind == "bool":
            return _parse_bool(name, raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if kind == "Path":
        return Path(raw)
    return raw
