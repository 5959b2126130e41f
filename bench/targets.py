"""The servers the concurrency section loads, each started before and stopped after: a context manager per server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from bench import llama_env, progress
from bench.context import BenchContext
from bench.defaults import CHAT_MODEL, CHAT_MODEL_DIR, openblas_library
from bench.servers import start_llama_server, start_mlx_lm_server
from config.settings import Settings
from models.catalog import load_catalog
from models.prepare import source_file


class Skip(Exception):
    """A server that cannot be run here; the message says why."""


@dataclass
class Target:
    """Where to send the load, the model name to ask for, and what the server is."""

    base_url: str
    model: str
    description: str


@contextmanager
def platform_one_worker(context: BenchContext) -> Iterator[Target]:
    """The platform as ``make run`` starts it: one worker on the model's queue, batching."""
    platform = context.platform()
    workers = platform.worker_count(CHAT_MODEL)
    batch = platform.env["MAX_CONCURRENCY"]
    yield Target(platform.base_url, CHAT_MODEL, f"{workers} worker batching up to {batch} requests")


def platform_replicas(count: int) -> Callable[[BenchContext], AbstractContextManager[Target]]:
    """The platform with a copy of the chat model loaded with ``replicas: count``: that many worker processes on
    its one queue (``POST /v1/models/load``; on one machine they share its cores)."""

    @contextmanager
    def start(context: BenchContext) -> Iterator[Target]:
        platform = context.platform()
        model_id = f"bench/replicas-{count}"
        batch = platform.env["MAX_CONCURRENCY"]
        progress.say(f"loading {model_id}: {count} worker processes on one queue")
        platform.load(CHAT_MODEL_DIR, model_id, replicas=count, max_concurrency=int(batch))
        try:
            platform.wait_for_workers(model_id, count)
            yield Target(
                platform.base_url, model_id, f"{count} worker processes on one queue, each batching up to {batch}"
            )
        finally:
            platform.unload(model_id)

    return start


@contextmanager
def mlx_lm_server(context: BenchContext) -> Iterator[Target]:
    """``mlx_lm.server`` on the platform's float32 folder, OpenBLAS preloaded, its default batching."""
    progress.say(f"starting mlx_lm.server on {CHAT_MODEL_DIR.name}")
    server = start_mlx_lm_server(CHAT_MODEL_DIR, context.log_dir, openblas_library())
    try:
        yield Target(server.base_url, "default_model", f"{CHAT_MODEL_DIR.name}, default batching, OpenBLAS preloaded")
    finally:
        server.stop()


@contextmanager
def llama_cpp_server(context: BenchContext) -> Iterator[Target]:
    """llama-cpp-python's server on the GGUF the model is made from, installed into its own venv on first use."""
    try:
        python = llama_env.ensure()
    except (llama_env.LlamaEnvError, OSError) as exc:
        raise Skip(str(exc)) from exc
    gguf = source_file(load_catalog(Settings.from_env())[CHAT_MODEL])
    threads = max((os.cpu_count() or 2) // 2, 1)
    progress.say(f"starting llama-cpp-python's server on {gguf.name}")
    server = start_llama_server(python, gguf, context.log_dir, threads)
    try:
        yield Target(
            server.base_url,
            CHAT_MODEL,
            f"llama-cpp-python {llama_env.version()}, {gguf.name}, n_threads={threads}, interrupt_requests=False",
        )
    finally:
        server.stop()


TARGETS: dict[str, tuple[str, Callable[[BenchContext], AbstractContextManager[Target]]]] = {
    "platform": ("platform (1 worker)", platform_one_worker),
    "platform-2-workers": ("platform (2 worker processes)", platform_replicas(2)),
    "platform-4-workers": ("platform (4 worker processes)", platform_replicas(4)),
    "mlx-lm": ("mlx_lm.server", mlx_lm_server),
    "llama-cpp": ("llama.cpp server", llama_cpp_server),
}
"""Server name (as ``--servers`` takes it) -> label in tables and the chart, and how to run it."""
