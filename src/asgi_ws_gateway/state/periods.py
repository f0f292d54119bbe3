"""Calendar periods in UTC for quotas: in Python for the in-memory store, in Lua for Redis's scripts.

The Redis store computes a quota's period inside its script, from Redis's ``TIME``: a period taken
from each gateway host's clock made hosts with skewed clocks count in different periods (a host
120 s behind admitted 10 of a limit of 3 per minute, its counter expired by Redis at once).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Literal

Period = Literal["minute", "hour", "day", "week", "month"]


def period_bounds(period: Period, now: float) -> tuple[datetime, datetime]:
    """The UTC period containing ``now``: ``(start, end)``."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "minute":
        start = t.replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    if period == "hour":
        start = t.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    return start, start + timedelta(days=calendar.monthrange(start.year, start.month)[1])


LUA_PERIOD = """
local function period(kind, t)  -- the UTC period containing t (POSIX s): start, end (POSIX s)
  if kind == 'minute' then return t - t % 60, t - t % 60 + 60 end
  if kind == 'hour' then return t - t % 3600, t - t % 3600 + 3600 end
  local day = math.floor(t / 86400)  -- days since 1970-01-01, a Thursday
  if kind == 'day' then return day * 86400, (day + 1) * 86400 end
  if kind == 'week' then
    local monday = day - (day + 3) % 7
    return monday * 86400, (monday + 7) * 86400
  end
  -- month: the civil date of day (H. Hinnant's civil_from_days, proleptic Gregorian)
  local z = day + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local first = day - (doy - math.floor((153 * mp + 2) / 5))
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  local length = ({31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31})[month]
  if month == 2 and year % 4 == 0 and (year % 100 ~= 0 or year % 400 == 0) then length = 29 end
  return first * 86400, (first + length) * 86400
end
"""
"""Lua defining ``period(kind, t)``: what :func:`period_bounds` computes, as POSIX seconds."""


__all__ = ["LUA_PERIOD", "Period", "period_bounds"]
