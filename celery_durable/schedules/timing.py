"""When a schedule's ticks fall: a cron expression or a fixed interval.

A tick is an integer number of milliseconds since the Unix epoch. Every
worker computes the same ticks from the same definition, so a tick names
itself: the schedule's name and the tick make the idempotency key of the
tick's run, and two workers firing one tick start one run.

Cron expressions are evaluated by cronsim (Debian cron's semantics, also
across DST changes) in the schedule's timezone (zoneinfo): a fixed-time job
such as `30 2 * * *` runs once on the day the clock skips 02:30 (right after
the jump) and once on the day it repeats it (the first 02:30); a wildcard
job such as `*/15 * * * *` keeps even intervals of real time. An interval
(`every=`) is real time too: ticks are the start plus whole multiples of the
interval, the start being `start_at` or else the Unix epoch (so "1h" ticks
on the hour in UTC, and no timezone applies).

This module is a leaf: workflow definitions import it to refuse a bad cron
string at import time.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import zoneinfo
from dataclasses import dataclass
from functools import cached_property

from cronsim import CronSim, CronSimError

from ..errors import ScheduleError
from ..options import parse_duration

MIN_EVERY_MS = 1000  # the timer poller's resolution makes shorter intervals meaningless

CRON_NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

CRON_HELP = (
    "five fields, minute hour day-of-month month day-of-week (such as '0 2 * * *' or "
    "'*/5 * * * *'), six with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly"
)


def to_datetime(ms: int) -> dt.datetime:
    """A tick as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def to_ms(seconds: float) -> int:
    return math.floor(seconds * 1000)


@dataclass(frozen=True)
class Timing:
    """A validated schedule timing; build it with `make_timing`."""

    cron: str | None = None
    every_ms: int | None = None
    timezone: str = "UTC"
    start_ms: int | None = None
    end_ms: int | None = None

    @cached_property
    def _zone(self) -> dt.tzinfo:
        return dt.UTC if self.timezone == "UTC" else zoneinfo.ZoneInfo(self.timezone)

    @cached_property
    def _expression(self) -> str | None:
        if self.cron is None:
            return None
        return CRON_NICKNAMES.get(self.cron.strip().lower(), self.cron)

    def describe(self) -> str:
        """For people: "cron 0 2 * * * (Europe/Prague)" or "every 30s"."""
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        seconds = (self.every_ms or 0) / 1000
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds >= size and seconds % size == 0:
                return f"every {seconds / size:g}{unit}"
        return f"every {seconds:g}s"

    def next_after(self, ms: int) -> int | None:
        """The first tick strictly after `ms` (and not before the start); None past the end."""
        if self.start_ms is not None:
            ms = max(ms, self.start_ms - 1)
        if self.every_ms is not None:
            anchor = self.start_ms or 0
            tick = anchor + ((ms - anchor) // self.every_ms + 1) * self.every_ms
        else:
            # CronSim drops the milliseconds, then looks from the next second on.
            moment = dt.datetime.fromtimestamp(ms / 1000, tz=self._zone)
            try:
                found = next(CronSim(self._expression or "", moment))
            except StopIteration:  # no match within 50 years
                return None
            tick = to_ms(found.timestamp())
        if self.end_ms is not None and tick > self.end_ms:
            return None
        return tick

    def latest(self, ms: int, count: int, since: int | None = None) -> list[int]:
        """Up to `count` ticks at or before `ms`, oldest first.

        None before the start, nor before `since` (so that a firing that is
        a few ticks behind computes those few, not `count`).
        """
        if self.end_ms is not None:
            ms = min(ms, self.end_ms)
        lowest = max(
            self.start_ms if self.start_ms is not None else -(2**62),
            since if since is not None else -(2**62),
        )
        found: list[int] = []
        if self.every_ms is not None:
            anchor = self.start_ms or 0
            if ms < anchor:
                return []
            tick = anchor + ((ms - anchor) // self.every_ms) * self.every_ms
            while tick >= lowest and len(found) < count:
                found.append(tick)
                tick -= self.every_ms
        else:
            # Reverse iteration from the middle of ms's second yields that second first.
            second = math.floor(ms / 1000)
            moment = dt.datetime.fromtimestamp(second + 0.5, tz=self._zone)
            for when in CronSim(self._expression or "", moment, reverse=True):
                tick = to_ms(when.timestamp())
                if tick < lowest or len(found) >= count:
                    break
                if tick <= ms:
                    found.append(tick)
        found.reverse()
        return found

    def upcoming(self, ms: int, count: int) -> list[int]:
        """The next `count` ticks after `ms` (fewer if the schedule ends)."""
        ticks: list[int] = []
        tick = self.next_after(ms)
        while tick is not None and len(ticks) < count:
            ticks.append(tick)
            tick = self.next_after(tick)
        return ticks


def make_timing(
    *,
    cron: str | None = None,
    every: float | str | None = None,
    timezone: str | None = None,
    start_at: dt.datetime | float | None = None,
    end_at: dt.datetime | float | None = None,
    where: str,
) -> Timing:
    """Validate a schedule's timing; `ScheduleError` naming `where` and the option if wrong.

    A naive `start_at`/`end_at` is read in `timezone`; numbers are Unix seconds.
    """
    if (cron is None) == (every is None):
        raise ScheduleError(f"{where}: give either cron= or every= (exactly one of them)")
    zone_name = _zone_name(timezone, where)
    zone = dt.UTC if zone_name == "UTC" else zoneinfo.ZoneInfo(zone_name)
    start_ms = _moment(start_at, zone, f"{where}: start_at")
    end_ms = _moment(end_at, zone, f"{where}: end_at")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ScheduleError(f"{where}: end_at must be after start_at")
    every_ms = None
    if every is not None:
        seconds = parse_duration(every, field=f"{where}: every")
        every_ms = round((seconds or 0) * 1000)
        if every_ms < MIN_EVERY_MS:
            raise ScheduleError(f"{where}: every={every!r} is shorter than the minimum of 1s")
    else:
        cron = _check_cron(cron, zone, where)
    timing = Timing(
        cron=cron, every_ms=every_ms, timezone=zone_name, start_ms=start_ms, end_ms=end_ms
    )
    now = to_ms(time.time())
    if timing.next_after(now) is None:
        if end_ms is not None and end_ms <= now:
            raise ScheduleError(f"{where}: end_at is in the past; the schedule would never fire")
        raise ScheduleError(f"{where}: cron {cron!r} matches no date in the next 50 years")
    return timing


def parse_schedule_option(value: object, timezone: str | None, *, where: str) -> Timing:
    """`@workflow(schedule=...)`: a cron string, or an interval ("30s", 60) for every=."""
    if isinstance(value, str) and (value.strip().startswith("@") or len(value.split()) > 1):
        return make_timing(cron=value, timezone=timezone, where=where)
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        if timezone is not None:
            raise ScheduleError(
                f"{where}: timezone= applies to cron schedules; {value!r} is an interval"
            )
        return make_timing(every=value, where=where)
    raise ScheduleError(
        f"{where}: schedule= takes a cron string ({CRON_HELP}) or an interval such as '30s', "
        f"got {value!r}"
    )


def _zone_name(timezone: str | None, where: str) -> str:
    if timezone is None:
        return "UTC"
    if not isinstance(timezone, str) or not timezone:
        raise ScheduleError(f"{where}: timezone must be an IANA name such as 'Europe/Prague'")
    if timezone.upper() == "UTC":
        return "UTC"
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"{where}: timezone {timezone!r} is not in the timezone database; use an IANA "
            "name such as 'Europe/Prague', 'America/New_York' or 'UTC'"
        ) from None
    return timezone


def _check_cron(cron: object, zone: dt.tzinfo, where: str) -> str:
    if not isinstance(cron, str) or not cron.strip():
        raise ScheduleError(f"{where}: cron must be a string of {CRON_HELP}; got {cron!r}")
    expression = CRON_NICKNAMES.get(cron.strip().lower(), cron)
    if expression.strip().startswith("@"):
        raise ScheduleError(f"{where}: cron {cron!r} is not a known nickname; use {CRON_HELP}")
    try:
        CronSim(expression, dt.datetime.now(zone))
    except CronSimError as exc:
        raise ScheduleError(
            f"{where}: cron {cron!r} is not a valid cron expression ({exc}); use {CRON_HELP}"
        ) from None
    return cron.strip()


def _moment(value: dt.datetime | float | None, zone: dt.tzinfo, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=zone)
        return to_ms(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return to_ms(value)
    raise ScheduleError(f"{field}: expected a datetime or Unix seconds, got {value!r}")
