"""``python -m config.restart_loop NAME -- COMMAND...``: runs one process of the local stack, again whenever it dies.

honcho ends the whole stack as soon as one of its processes exits; each line of the Procfile runs behind this loop
instead, so a process that dies (Redis killed, a crash) is started again after a pause while the others go on and
reconnect to it. The pause is 1 s, doubled each time the process dies within a minute of starting (at most 30 s).
SIGTERM or SIGINT (honcho stopping the stack) goes to the command and ends the loop with its exit status, and so
does exit status 78 (EX_CONFIG: the process refuses its configuration, e.g. the web without keys on a public address;
starting it again would refuse again).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 30.0
CONFIGURATION_REFUSED = 78
STEADY_SECONDS = 60.0
"""A process that ran this long before dying is restarted after the first pause again."""


def say(name: str, message: str) -> None:
    print(f"[restart-loop] {name}: {message}", file=sys.stderr, flush=True)


def exit_status(code: int) -> int:
    """A shell's exit status for a child's return code (a child killed by signal N gives 128 + N)."""
    return 128 - code if code < 0 else code


def run(name: str, command: list[str]) -> int:
    stopping = threading.Event()
    child: subprocess.Popen | None = None

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    quick_deaths = 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command)
        code = child.wait()
        if stopping.is_set():
            return exit_status(code)
        if code == CONFIGURATION_REFUSED:
            say(name, f"exited with status {code}: it refuses its configuration (see above); not starting it again")
            return code
        ran = time.monotonic() - started
        quick_deaths = 0 if ran >= STEADY_SECONDS else quick_deaths + 1
        pause = min(FIRST_PAUSE_SECONDS * 2 ** max(quick_deaths - 1, 0), LONGEST_PAUSE_SECONDS)
        say(name, f"exited with status {code} after {ran:.0f}s; starting it again in {pause:g}s")
        if stopping.wait(pause):
            return exit_status(code)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m config.restart_loop NAME -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return run(args[0], args[2:])


if __name__ == "__main__":
    sys.exit(main())
