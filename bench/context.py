"""What every section is handed: the options, where results and logs go, and the platform (started on need)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from bench.defaults import LOGS_DIR
from bench.options import Options
from bench.stack import PlatformStack


@dataclass
class BenchContext:
    """Shared by the sections of one run; ``close`` stops whatever was started."""

    options: Options
    out_dir: Path
    log_dir: Path = field(default_factory=lambda: LOGS_DIR / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    _platform: PlatformStack | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def platform(self) -> PlatformStack:
        """The running platform, started the first time a section asks for it."""
        if self._platform is None:
            platform = PlatformStack(self.log_dir / "platform")
            try:
                platform.start()
            except BaseException:
                platform.stop()
                raise
            self._platform = platform
        return self._platform

    def close(self) -> None:
        """Stops the platform if it was started."""
        if self._platform is not None:
            self._platform.stop()
            self._platform = None
