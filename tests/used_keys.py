"""Every API key secret the session's tests make or send. At the end of a session, no log of any service it ran
may hold one (``pytest_sessionfinish`` in conftest fails the run otherwise)."""

from __future__ import annotations

from pathlib import Path

USED: set[str] = set()


def remember(*secrets: str) -> str:
    """Records ``secrets``; returns the first (for ``KEY = remember("sk-...")``)."""
    USED.update(secrets)
    return secrets[0]


def leaks(folder: Path) -> list[str]:
    """The logs under ``folder`` that hold a used secret, each with how many of them."""
    found = []
    for path in sorted(folder.rglob("*.log")):
        text = path.read_text(errors="replace")
        held = sum(secret in text for secret in USED)
        if held:
            found.append(f"{path.relative_to(folder)} holds {held} API key secret(s)")
    return found
