"""Quota periods: when the current period of a quota started and when it resets (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

LIFETIME_START = datetime(1970, 1, 1, tzinfo=UTC)


def period_bounds(
    period: str, now: datetime, reset_time: time | None = None
) -> tuple[datetime, datetime | None]:
    """(start, end) of the period containing ``now``; ``end`` is None for lifetime."""
    now = now.astimezone(UTC)
    if period == "minute":
        start = now.replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    if period == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    at = reset_time or time(0, 0)
    if period == "day":
        start = now.replace(hour=at.hour, minute=at.minute, second=0, microsecond=0)
        if start > now:
            start -= timedelta(days=1)
        return start, start + timedelta(days=1)
    if period == "month":
        start = now.replace(day=1, hour=at.hour, minute=at.minute, second=0, microsecond=0)
        if start > now:
            start = _add_months(start, -1)
        return start, _add_months(start, 1)
    if period == "lifetime":
        return LIFETIME_START, None
    raise ValueError(f"unknown quota period {period!r}")


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    return moment.replace(year=moment.year + month_index // 12, month=month_index % 12 + 1)
