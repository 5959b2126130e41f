"""The peers a Linux user would run instead, started on free ports: ``mlx_lm.server`` and llama.cpp's server."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.defaults import ROOT
from tests.stack import free_port, wait_until


@dataclass
class ServerProcess:
    """A started server: where it answers and where it logs."""

    name: str
    process: subprocess.Popen
    base_url: str
    log_path: Path

    def stop(self) -> None:
        """Terminates the server (kills it if it does not go within 20 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _start(name: str, argv: list[str], log_dir: Path, env: dict[str, str], port: int, ready_path: str) -> ServerProcess:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = ServerProcess(name, process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_until(lambda: requests.get(server.base_url + ready_path, timeout=2).ok, 300, name, process)
    except Exception:
        server.stop()
        raise
    return server


def start_mlx_lm_server(
    model_dir: Path, log_dir: Path, openblas: str | None, flags: list[str] | None = None
) -> ServerProcess:
    """``mlx_lm server`` on ``model_dir`` with its default batching (and ``flags``), OpenBLAS preloaded like the
    platform's workers."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    if openblas:
        env["LD_PRELOAD"] = openblas
    argv = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model_dir), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "WARNING", *(flags or [])]
    return _start("mlx-lm-server", argv, log_dir, env, port, "/health")


def start_llama_server(python: Path, gguf: Path, log_dir: Path, threads: int) -> ServerProcess:
    """llama-cpp-python's server on the original GGUF; requests queue rather than interrupt each other."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
    argv = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--n_ctx", "4096", "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    argv += ["--interrupt_requests", "False"]
    return _start("llama-cpp-server", argv, log_dir, env, port, "/v1/models")
