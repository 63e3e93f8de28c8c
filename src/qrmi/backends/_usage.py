"""Reading what a task cost from a vendor's job description (for ``Backend.task_usage``).

Vendors state times as ISO 8601 text (with ``Z``, an offset, or none meaning UTC) or as
seconds since the epoch, and durations as numbers; these helpers turn them into seconds and
answer ``None`` for anything missing or malformed, so that a vendor's odd answer costs the
accounting a fallback (the gateway's own observation), never an error.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

__all__ = ["duration", "seconds", "timestamp"]


def seconds(value: Any, *, scale: float = 1.0) -> float | None:
    """``value * scale`` when ``value`` is a finite, non-negative number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value) * scale


def timestamp(value: Any) -> float | None:
    """Seconds since the epoch of an ISO 8601 text or an epoch number; ``None`` otherwise."""
    if isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    return seconds(value)


def duration(start: Any, end: Any) -> float | None:
    """Seconds from ``start`` to ``end`` (see :func:`timestamp`); ``None`` unless both are
    known and ``end`` is not before ``start``."""
    begun, ended = timestamp(start), timestamp(end)
    if begun is None or ended is None or ended < begun:
        return None
    return ended - begun
