"""Progress lines for a person waiting on a long benchmark: elapsed time, section and step."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STARTED_VAR = "MLXF_BENCH_STARTED_AT"
SECTION_VAR = "MLXF_BENCH_SECTION"

# Child processes (the in-process probes) inherit both, so their lines share the runner's clock and section.
os.environ.setdefault(STARTED_VAR, repr(time.time()))
os.environ.setdefault(SECTION_VAR, "bench")


def set_section(name: str) -> None:
    """Names the section that later progress lines (of this process and its children) belong to."""
    os.environ[SECTION_VAR] = name


def say(message: str) -> None:
    """Prints one progress line to stderr, stamped with the time since the benchmark started."""
    elapsed = int(time.time() - float(os.environ[STARTED_VAR]))
    print(f"[{elapsed // 60:02d}:{elapsed % 60:02d} {os.environ[SECTION_VAR]}] {message}", file=sys.stderr, flush=True)


@contextmanager
def ticking(message: str, every: float = 30.0) -> Iterator[None]:
    """Says ``message``, then repeats it with the time spent every ``every`` seconds until the block ends."""
    say(message)
    done = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        while not done.wait(every):
            say(f"{message} ({time.monotonic() - started:.0f}s so far)")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
