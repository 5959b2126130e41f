"""``config.restart_loop``: a process of the local stack that dies is started again; stopping the loop stops it.

Real processes, no services: the command appends a line to a file each time it starts.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.stack import ROOT, wait_until


def loop(tmp_path: Path, code: str) -> tuple[subprocess.Popen, Path]:
    starts = tmp_path / "starts"
    script = f"open({str(starts)!r}, 'a').write('started\\n'); {code}"
    argv = [sys.executable, "-m", "config.restart_loop", "test", "--", sys.executable, "-c", script]
    return subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True), starts


def starts_of(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_process_that_dies_is_started_again(tmp_path):
    process, starts = loop(tmp_path, "raise SystemExit(3)")
    try:
        wait_until(lambda: starts_of(starts) >= 2, 20, "the command to be started a second time")
    finally:
        process.send_signal(signal.SIGTERM)
    assert process.wait(10) in (3, 128 + signal.SIGTERM)
    assert "exited with status 3" in process.stderr.read()
    seen = starts_of(starts)
    time.sleep(2.5)  # past the longest pause it had reached: stopped means never started again
    assert starts_of(starts) == seen


def test_stopping_the_loop_stops_its_process_and_ends_with_its_status(tmp_path):
    process, starts = loop(tmp_path, "import time; time.sleep(120)")
    wait_until(lambda: starts_of(starts) == 1, 20, "the command to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 128 + signal.SIGTERM
    assert starts_of(starts) == 1


def test_a_process_that_refuses_its_configuration_is_not_started_again(tmp_path):
    process, starts = loop(tmp_path, "raise SystemExit(78)")
    assert process.wait(20) == 78
    assert "not starting it again" in process.stderr.read()
    assert starts_of(starts) == 1
