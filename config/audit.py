"""The audit log (MongoDB ``audit_log``): every admin request and every key change, with who made it, what, when,
from where and its outcome. Entries hold names, ids and paths, never a secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mongoengine as me


class AuditEntry(me.Document):
    at = me.DateTimeField(required=True)
    actor = me.StringField(required=True)
    """The key's name (``admin`` for an ``API_KEYS`` key, ``cli:<user>`` for the command line)."""
    actor_id = me.StringField()
    action = me.StringField(required=True)
    """``METHOD /path`` for a request, ``keys.create`` (``revoke``, ``rotate``) for a key change."""
    target = me.StringField()
    remote = me.StringField()
    status = me.IntField()

    meta = {"collection": "audit_log", "indexes": ["-at", ("actor", "-at"), ("actor_id", "-at")]}


def record(
    actor: str, actor_id: str | None, action: str, target: str | None, remote: str | None, status: int
) -> AuditEntry:
    entry = AuditEntry(
        at=datetime.now(UTC), actor=actor, actor_id=actor_id, action=action, target=target, remote=remote, status=status
    )
    entry.save()
    return entry


@dataclass(frozen=True)
class AuditFilter:
    key: str | None = None
    """A key's name or id."""
    action: str | None = None
    """An exact action, or its start (``keys.``, ``POST /v1/models``)."""
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100


def search(wanted: AuditFilter) -> list[dict[str, Any]]:
    """The newest entries first."""
    query = AuditEntry.objects
    if wanted.key:
        query = query.filter(me.Q(actor=wanted.key) | me.Q(actor_id=wanted.key))
    if wanted.since:
        query = query.filter(at__gte=wanted.since)
    if wanted.until:
        query = query.filter(at__lt=wanted.until)
    entries = []
    for entry in query.order_by("-at"):
        if wanted.action and not entry.action.startswith(wanted.action):
            continue
        entries.append(
            {
                "at": entry.at,
                "actor": entry.actor,
                "actor_id": entry.actor_id,
                "action": entry.action,
                "target": entry.target,
                "remote": entry.remote,
                "status": entry.status,
            }
        )
        if len(entries) >= wanted.limit:
            break
    return entries
