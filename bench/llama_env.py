"""A separate virtualenv with llama-cpp-python's server, built from source on first use, never in the project venv.

The build compiles llama.cpp (about 6.5 minutes on two cores); a marker file
records a finished install so later runs start at once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench import progress
from bench.defaults import BENCH_DIR

LLAMA_CPP_PYTHON = "llama-cpp-python[server]==0.3.36"
VENV_DIR = BENCH_DIR / "llama-venv"
INSTALL_LOG = BENCH_DIR / "llama-venv-install.log"
INSTALL_TIMEOUT_SECONDS = 45 * 60


class LlamaEnvError(RuntimeError):
    """llama-cpp-python could not be installed; the message says why."""


def python() -> Path:
    """The interpreter of the llama.cpp venv."""
    return VENV_DIR / "bin" / "python"


def _marker() -> Path:
    return VENV_DIR / f".installed-{LLAMA_CPP_PYTHON.replace('[', '-').replace(']', '').replace('==', '-')}"


def ensure() -> Path:
    """Creates the venv and installs llama-cpp-python's server if not done yet; returns its interpreter."""
    if _marker().exists():
        return python()
    if shutil.which("cmake") is None and shutil.which("cc") is None:
        raise LlamaEnvError("no C compiler or cmake: llama-cpp-python builds llama.cpp from source")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    if not python().exists():
        progress.say(f"creating the llama.cpp venv in {VENV_DIR}")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV_DIR)], check=True)
    with (
        open(INSTALL_LOG, "w") as log,
        progress.ticking(f"installing {LLAMA_CPP_PYTHON} (compiles llama.cpp, ~7 min; log: {INSTALL_LOG})"),
    ):
        try:
            result = subprocess.run(
                [str(python()), "-m", "pip", "install", "--progress-bar", "off", LLAMA_CPP_PYTHON],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=INSTALL_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as exc:
            raise LlamaEnvError(
                f"pip install took longer than {INSTALL_TIMEOUT_SECONDS}s (log: {INSTALL_LOG})"
            ) from exc
    if result.returncode != 0:
        tail = INSTALL_LOG.read_text(errors="replace").strip().splitlines()[-5:]
        raise LlamaEnvError(f"pip install exited {result.returncode} (log: {INSTALL_LOG}): {' | '.join(tail)}")
    _marker().touch()
    return python()


def version() -> str:
    """The installed llama-cpp-python version, or an empty string."""
    if not python().exists():
        return ""
    result = subprocess.run(
        [str(python()), "-c", "import llama_cpp; print(llama_cpp.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip()


if __name__ == "__main__":
    print(ensure())
