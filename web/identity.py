"""Who is asking: the caller of the request being served, set in ``g.caller`` by ``web.auth`` before any view runs.

Objects a caller creates (jobs, webhooks, collections, stored responses) carry its ``owner``; an admin caller sees
every owner's, any other only its own (another's answer 404, as if they did not exist).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import g

SCOPES = ("admin", "inference", "jobs", "rag", "batches", "read")
"""What a key may do: ``admin`` everything; the others their API group (``read``: the GET routes of every group)."""


@dataclass(frozen=True)
class Caller:
    owner: str | None
    """The id objects are recorded under: the key's id, ``None`` when the API runs without keys."""
    name: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return self.admin or scope in self.scopes

    @property
    def sees(self) -> str | None:
        """The owner whose objects this caller may see, or ``None`` for all of them (admin, or no keys)."""
        return None if self.admin else self.owner


OPEN = Caller(owner=None, name="anonymous", scopes=frozenset({"admin"}))
"""The caller when the API runs without keys (the operator allowed it): it may do and see everything."""


def current_caller() -> Caller:
    return g.get("caller") or OPEN


ANONYMOUS = Caller(owner="anonymous", name="anonymous", scopes=frozenset())
"""The caller of a public route (``/health``, ``/metrics``) without a key while the API has keys: it owns and may
see nothing."""
