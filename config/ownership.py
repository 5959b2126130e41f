"""Owned objects: jobs, webhooks, collections and stored responses carry the ``owner`` that created them (an API
key's id; ``None`` without keys). A caller sees an object when it sees every owner (``sees`` is ``None``: an admin,
or the API without keys) or is its owner; another's object is answered as missing, never as forbidden."""

from __future__ import annotations

from typing import Any


def visible(owner: str | None, sees: str | None) -> bool:
    return sees is None or owner == sees


def owned_by(sees: str | None) -> dict[str, Any]:
    """A query filter for what ``sees`` may see."""
    return {} if sees is None else {"owner": sees}
