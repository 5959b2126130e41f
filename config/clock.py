"""Time as the records keep it: UTC at MongoDB's precision, written as ISO 8601 with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current time at MongoDB's precision (milliseconds), so what is kept compares equal to what was written."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_utc(moment: datetime) -> datetime:
    """``moment`` with its time zone; MongoDB hands back naive UTC datetimes unless the client is tz-aware."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
