"""Small statistics over lists of measurements (None for an empty list, so a table can show a dash)."""

from __future__ import annotations

import statistics


def median(values: list[float]) -> float | None:
    """The median of ``values``."""
    return statistics.median(values) if values else None


def percentile(values: list[float], pct: float) -> float | None:
    """The ``pct`` percentile of ``values`` with linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is zero."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator
