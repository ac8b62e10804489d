"""How long a cron schedule may leave between two runs, from Dagster's own cron iterator.

Dagster has no public API for a cron string's ticks (``dagster._utils.schedules`` is private),
so this lives with the rest of the code that may break on a Dagster upgrade.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from dagster._utils.schedules import cron_string_iterator

TICKS = 16  # enough consecutive ticks to see a weekly pattern's longest gap


def longest_gap(cron: str, tz: str, start: datetime | None = None) -> timedelta:
    """The longest time between consecutive ticks of ``cron`` in ``tz`` over the next ``TICKS``
    ticks after ``start`` (default now): a weekday-only schedule's gap is the weekend's."""
    start = start or datetime.now(timezone.utc)
    ticks, gaps = cron_string_iterator(start.timestamp(), cron, tz), []
    previous = next(ticks)
    for _ in range(TICKS):
        tick = next(ticks)
        gaps.append(tick - previous)
        previous = tick
    return max(gaps)
