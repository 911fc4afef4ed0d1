"""Ticks of a time axis: few, at round times, labelled for the span they cover.

A tick every bucket makes labels run into each other; here the step is the smallest
"round" one (1, 5, 15 or 30 minutes, 1, 3, 6 or 12 hours, a day, two days, a week, a
month, a quarter, a year) that puts at most ``max_ticks`` ticks on the span, and ticks
fall on whole steps of UTC time (weeks on Mondays, months on the 1st). The label says
what changes from tick to tick: the time of day for steps under a day ("09:00"), the
date for longer ones ("Nov 20"), the month or the year beyond. Each tick may carry a
second line of context, given where it changes: the date under times of day, the year
under dates and months, so a reader always knows where the axis starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
#: Fixed-length steps; months, quarters and years follow (calendar steps).
_FIXED_STEPS_MS: tuple[int, ...] = (
    MINUTE_MS,
    5 * MINUTE_MS,
    15 * MINUTE_MS,
    30 * MINUTE_MS,
    HOUR_MS,
    3 * HOUR_MS,
    6 * HOUR_MS,
    12 * HOUR_MS,
    DAY_MS,
    2 * DAY_MS,
    WEEK_MS,
)
_CALENDAR_STEPS_MONTHS: tuple[int, ...] = (1, 3, 12)
#: 1970-01-05, the first Monday after the epoch: weekly ticks are whole weeks from it.
_FIRST_MONDAY_MS = 4 * DAY_MS
#: At most this many ticks by default: labels of 5-6 characters stay apart on 1,000 px.
MAX_TICKS = 8


@dataclass(frozen=True, slots=True)
class Tick:
    """One tick: its time (epoch ms), its label and an optional line of context below."""

    ms: int
    label: str
    context: str = ""


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _fixed_ticks(start_ms: int, end_ms: int, step: int) -> list[int]:
    origin = _FIRST_MONDAY_MS if step == WEEK_MS else 0
    first = origin + -(-(start_ms - origin) // step) * step  # first whole step >= start
    return list(range(first, end_ms + 1, step))


def _month_ticks(start_ms: int, end_ms: int, months: int) -> list[int]:
    moment = _utc(start_ms)
    index = moment.year * 12 + moment.month - 1
    at_start = datetime(moment.year, moment.month, 1, tzinfo=UTC) == moment
    index += 0 if at_start else 1  # first 1st of a month at or after the start
    index = -(-index // months) * months  # quarters start in Jan/Apr/Jul/Oct, years in Jan
    ticks: list[int] = []
    while True:
        year, month = divmod(index, 12)
        ms = int(datetime(year, month + 1, 1, tzinfo=UTC).timestamp() * 1000)
        if ms > end_ms:
            return ticks
        ticks.append(ms)
        index += months


def _label(ms: int, step_ms: int | None, months: int) -> tuple[str, str]:
    """(label, context) of a tick: what the step changes, and what it leaves implied."""
    moment = _utc(ms)
    if months >= 12:
        return moment.strftime("%Y"), ""
    if months:
        return moment.strftime("%b"), moment.strftime("%Y")
    assert step_ms is not None
    if step_ms < DAY_MS:
        return moment.strftime("%H:%M"), moment.strftime("%b %d")
    return moment.strftime("%b %d"), moment.strftime("%Y")


def time_ticks(start_ms: int, end_ms: int, max_ticks: int = MAX_TICKS) -> list[Tick]:
    """Ticks for an axis from ``start_ms`` to ``end_ms`` (epoch ms, inclusive), in order.

    The smallest round step giving at most ``max_ticks`` ticks in the span; with the
    context line only on the first tick and where it changes.
    """
    if end_ms < start_ms:
        raise ValueError("the axis ends before it starts")
    if max_ticks < 2:
        raise ValueError("max_ticks must be at least 2")
    times: list[int] = []
    step_ms: int | None = None
    months = 0
    for step in _FIXED_STEPS_MS:
        times = _fixed_ticks(start_ms, end_ms, step)
        if len(times) <= max_ticks:
            step_ms = step
            break
    else:
        for months in _CALENDAR_STEPS_MONTHS:
            times = _month_ticks(start_ms, end_ms, months)
            if len(times) <= max_ticks:
                break
        else:
            # Centuries of data: every n-th year.
            every = -(-len(times) // max_ticks)
            times = times[::every]
    ticks: list[Tick] = []
    previous_context = None
    for ms in times:
        label, context = _label(ms, step_ms, months)
        ticks.append(Tick(ms, label, context if context != previous_context else ""))
        previous_context = context
    return ticks
