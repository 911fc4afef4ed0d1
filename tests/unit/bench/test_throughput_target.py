"""The worker phase's completion target: duplicates are subtracted, late events are an error.

The bench's input is in event-time order per partition, so a late event means the worker
is wrong, never that fewer events have to become visible.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.bench.processes import BenchError
from streams.bench.throughput import completion_target

LOG = Path("/tmp/journey-bench-x/worker.log")


def test_target_is_accepted_minus_duplicates() -> None:
    """Accepted events minus the duplicates the worker dropped; rejected ones do not count."""
    totals = {
        "journey_events_total": 1000.0,
        "journey_events_duplicate_total": 7.0,
        "journey_events_rejected_total": 3.0,
        "journey_events_late_total": 0.0,
    }
    assert completion_target(totals, LOG) == 993


def test_missing_counters_count_as_zero() -> None:
    """A worker that has not counted a duplicate or late event yet exports no such sample."""
    assert completion_target({"journey_events_total": 42.0}, LOG) == 42
    assert completion_target({}, LOG) == 0


def test_late_events_raise_naming_the_count_and_the_log() -> None:
    """Any late event fails the phase: the message gives the count and the worker log."""
    totals = {
        "journey_events_total": 1000.0,
        "journey_events_duplicate_total": 7.0,
        "journey_events_late_total": 12.0,
    }
    with pytest.raises(BenchError, match=r"12 late event\(s\)") as caught:
        completion_target(totals, LOG)
    assert str(LOG) in str(caught.value)
    assert "in-order input must never produce late events" in str(caught.value)


def test_late_events_are_never_subtracted() -> None:
    """A single late event raises rather than lowering the target to 999."""
    with pytest.raises(BenchError, match=r" 1 late event\(s\)"):
        completion_target({"journey_events_total": 1000.0, "journey_events_late_total": 1.0}, LOG)
