"""Ticks of the report's time axis: few, at round UTC times, labelled for the span."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from streams.report.timeaxis import DAY_MS, HOUR_MS, Tick, time_ticks


def ms(*parts: int) -> int:
    """Epoch ms of a UTC date and time."""
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def test_an_hour_gets_quarter_hours_with_the_date_once() -> None:
    """09:30-10:30: a tick every 15 minutes, times of day, the date under the first only."""
    ticks = time_ticks(ms(2026, 11, 20, 9, 30), ms(2026, 11, 20, 10, 30))
    assert [t.label for t in ticks] == ["09:30", "09:45", "10:00", "10:15", "10:30"]
    assert [t.context for t in ticks] == ["Nov 20", "", "", "", ""]


def test_a_day_gets_three_hourly_times_and_the_new_date_at_midnight() -> None:
    """A day from 09:30: 12:00, 15:00 ... 09:00; the date again where the day changes."""
    start = ms(2026, 11, 20, 9, 30)
    ticks = time_ticks(start, start + DAY_MS)
    assert [t.label for t in ticks] == [
        "12:00", "15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00",
    ]  # fmt: skip
    assert ticks[0] == Tick(ms(2026, 11, 20, 12), "12:00", "Nov 20")
    assert ticks[4] == Tick(ms(2026, 11, 21), "00:00", "Nov 21")
    assert all(t.context == "" for i, t in enumerate(ticks) if i not in (0, 4))


def test_a_week_gets_dates() -> None:
    """Seven days: one tick a day at midnight, labelled by date, the year once."""
    start = ms(2026, 11, 20, 9, 30)
    ticks = time_ticks(start, start + 7 * DAY_MS)
    assert [t.label for t in ticks] == [f"Nov {d}" for d in range(21, 28)]
    assert [t.ms for t in ticks] == [ms(2026, 11, d) for d in range(21, 28)]
    assert ticks[0].context == "2026"


def test_a_month_gets_mondays_and_a_quarter_gets_months() -> None:
    """30 days: weekly ticks on Mondays; 90 days: the 1st of each month, year where it turns."""
    start = ms(2026, 11, 20, 9, 30)  # a Friday
    weekly = time_ticks(start, start + 30 * DAY_MS)
    assert [t.label for t in weekly] == ["Nov 23", "Nov 30", "Dec 07", "Dec 14"]
    assert all(datetime.fromtimestamp(t.ms / 1000, UTC).weekday() == 0 for t in weekly)
    monthly = time_ticks(start, start + 90 * DAY_MS)
    assert [(t.label, t.context) for t in monthly] == [
        ("Dec", "2026"), ("Jan", "2027"), ("Feb", ""),
    ]  # fmt: skip


@pytest.mark.parametrize("hours", [0.05, 1, 5, 30, 24 * 10, 24 * 45, 24 * 400, 24 * 365 * 30])
def test_never_more_than_eight_ticks_and_evenly_spaced(hours: float) -> None:
    """For any span there are 1-8 ticks, inside it, all one step apart (calendar months aside)."""
    start = ms(2026, 11, 20, 9, 30)
    end = start + int(hours * HOUR_MS)
    ticks = time_ticks(start, end)
    assert 1 <= len(ticks) <= 8
    assert all(start <= t.ms <= end for t in ticks)
    steps = {b.ms - a.ms for a, b in itertools.pairwise(ticks)}
    if hours < 24 * 30:
        assert len(steps) <= 1
