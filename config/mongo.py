"""The one way every process connects to MongoDB: the default mongoengine connection (pymongo connects lazily,
on first use)."""

from __future__ import annotations

import mongoengine as me

from config.settings import Settings

MONITOR_SECONDS = 60
"""How often pymongo's monitor threads check the server while nothing else talks to it (its default, 10 s, kept
the Mongo-wire server busy for every process of an idle stack). A server that went away is still found at once:
an operation that fails marks it unknown, and the next one looks for it again every half second."""


def connect(settings: Settings, timeout_ms: int = 3000) -> None:
    me.disconnect()
    me.connect(
        host=settings.mongodb_url,
        db=settings.database_name,
        serverSelectionTimeoutMS=timeout_ms,
        heartbeatFrequencyMS=MONITOR_SECONDS * 1000,
        tz_aware=True,
        uuidRepresentation="standard",
    )


def disconnect() -> None:
    me.disconnect()
