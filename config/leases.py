"""Leases kept on MongoDB documents (running jobs, RAG ingests and deletes): the date a lease runs out and, where
one run owns the document, that run's token; what its holder renews while it works and a sweep takes back.

A lease is taken, ended and checked inside the owner's own compare-and-set move (a job's status change, a
document's), so ``Lease`` gives the fields and conditions and the owner writes them in that one update; only a
renewal is an update of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from config.clock import as_utc, now


def new_token() -> str:
    """A token naming one holder of a lease."""
    return uuid.uuid4().hex


def as_update(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` as mongoengine update arguments: a field whose value is None is unset, every other one set."""
    return {
        f"unset__{name}" if value is None else f"set__{name}": True if value is None else value
        for name, value in fields.items()
    }


@dataclass(frozen=True)
class Lease:
    """A lease kept in a document's field ``expires`` (the date it runs out) and, when one run owns the document,
    ``holder`` (that run's token)."""

    expires: str
    holder: str | None = None

    def acquire(self, seconds: float, token: str | None = None, moment: datetime | None = None) -> dict[str, Any]:
        """The fields that give the lease to ``token`` for ``seconds`` from ``moment`` (now by default)."""
        fields: dict[str, Any] = {self.expires: (moment or now()) + timedelta(seconds=seconds)}
        if self.holder is not None:
            fields[self.holder] = token
        return fields

    def held_by(self, token: str | None) -> dict[str, Any]:
        """The condition that the lease is still ``token``'s."""
        return {self.holder: token} if self.holder is not None else {}

    def renew(self, held: Any, seconds: float) -> int:
        """Extends the lease of every document of the query ``held`` to ``seconds`` from now; how many matched.
        ``held`` names what the holder still owns (its ids, statuses and token), so a lease taken back stays so."""
        return held.update(**{f"set__{self.expires}": now() + timedelta(seconds=seconds)})

    def release(self, forget_holder: bool = False) -> dict[str, None]:
        """The fields that end the lease (the holder's token too with ``forget_holder``: the document is free)."""
        fields: dict[str, None] = {self.expires: None}
        if forget_holder and self.holder is not None:
            fields[self.holder] = None
        return fields

    def expired_before(self, moment: datetime) -> dict[str, Any]:
        """The condition that the lease had run out at ``moment``: a sweep takes a document back only while it
        holds, so a lease renewed since the sweep read it keeps its run."""
        return {f"{self.expires}__lt": moment}

    def has_expired(self, document: Any, moment: datetime) -> bool:
        """Whether ``document``, as read, holds a lease that had run out at ``moment``."""
        expires = getattr(document, self.expires)
        return expires is not None and as_utc(expires) < moment

    def sweep(self, leased: Any, moment: datetime | None = None) -> list[Any]:
        """The documents of the query ``leased`` whose lease had run out at ``moment`` (now by default)."""
        return list(leased.filter(**self.expired_before(moment or now())))
