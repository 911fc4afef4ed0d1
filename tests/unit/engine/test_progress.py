"""Event time across input partitions: the intake's progress, the receiver's minimum, and
the guarantee they give together (issue 11): input read unevenly is never late."""

from __future__ import annotations

from collections import deque

from engine_support import HOUR, MINUTE, SECOND, T0, apply_outputs, ev
from hypothesis import given, settings
from hypothesis import strategies as st
from test_properties import traffic

from streams.engine.events import Event
from streams.engine.progress import InputProgress, ProgressReport, SourceProgress
from streams.engine.sessionizer import SessionConfig, Sessionizer, sessionize_all
from streams.engine.stages import StageRules

RULES = StageRules.default()
CFG = SessionConfig()
LATENESS = CFG.allowed_lateness_ms
IDLE = 5 * SECOND


# ---------------------------------------------------------------- SourceProgress (intake)


def test_source_reports_the_highest_event_time_read_per_partition() -> None:
    """Progress is the highest accepted event time; a partition read from nothing is left out."""
    source = SourceProgress(IDLE)
    source.partitions = 3
    source.assign([0, 1, 2], now_ms=0)
    source.observe({0: T0 + 5, 1: None}, now_ms=10)
    source.observe({0: T0 + 2}, now_ms=20)  # disorder: the highest stays
    assert source.report(caught_up=set(), now_ms=30) == ProgressReport(3, ((0, T0 + 5),))


def test_partition_is_idle_only_when_caught_up_and_quiet_for_the_timeout() -> None:
    """Idle needs both: read to the end, and no record for ``idle_ms`` of wall time."""
    now = T0 + 10 * HOUR
    source = SourceProgress(IDLE)
    source.partitions = 2
    source.assign([0, 1], now_ms=now)
    source.observe({0: T0}, now_ms=now)
    # Quiet long enough but with a backlog: never idle, whatever the clock says.
    assert source.report(caught_up={1}, now_ms=now + 60 * SECOND).progress == (
        (0, T0),
        (1, now + 60 * SECOND - IDLE),
    )
    # Caught up, but a record came less than idle_ms ago.
    source.observe({0: T0 + 1}, now_ms=now + 61 * SECOND)
    assert dict(source.report(caught_up={0, 1}, now_ms=now + 65 * SECOND).progress)[0] == T0 + 1
    # Caught up and quiet: the partition follows the clock, idle_ms behind.
    idle = dict(source.report(caught_up={0, 1}, now_ms=now + 66 * SECOND).progress)
    assert idle == {0: now + 66 * SECOND - IDLE, 1: now + 66 * SECOND - IDLE}


def test_partition_with_only_rejected_records_still_goes_idle() -> None:
    """Tombstones or health checks (all rejected) are no traffic: they must not hold it."""
    source = SourceProgress(IDLE)
    source.assign([0], now_ms=0)
    source.observe({0: T0}, now_ms=0)
    for now in range(1_000, 20_000, 1_000):
        source.observe({0: None}, now_ms=now)
    assert source.quiet(now_ms=19_000) == [0]
    assert source.report(caught_up={0}, now_ms=19_000).progress == ((0, max(T0, 19_000 - IDLE)),)


def test_empty_partition_counts_from_its_assignment() -> None:
    """A partition that never had a record is unknown until idle_ms after it was assigned."""
    source = SourceProgress(IDLE)
    source.assign([0], now_ms=1_000)
    assert source.report(caught_up={0}, now_ms=1_000 + IDLE - 1).progress == ()
    assert source.report(caught_up={0}, now_ms=1_000 + IDLE).progress == ((0, 1_000),)


def test_idle_never_lowers_progress_ahead_of_the_clock() -> None:
    """Events stamped ahead of the wall clock keep their progress when the partition idles."""
    source = SourceProgress(IDLE)
    source.assign([0], now_ms=0)
    source.observe({0: 10 * HOUR}, now_ms=0)
    assert source.report(caught_up={0}, now_ms=IDLE).progress == ((0, 10 * HOUR),)


def test_revoked_partition_leaves_the_report_and_restarts_when_back() -> None:
    """The new owner reports a moved partition; what this intake knew of it is dropped."""
    source = SourceProgress(IDLE)
    source.assign([0, 1], now_ms=0)
    source.observe({0: T0, 1: T0}, now_ms=0)
    source.assign([1], now_ms=1)
    assert [p for p, _ in source.report(set(), now_ms=2).progress] == [1]
    source.assign([0, 1], now_ms=3)
    assert [p for p, _ in source.report(set(), now_ms=4).progress] == [1]


# ---------------------------------------------------------------- InputProgress (receiver)


def test_low_is_the_slowest_partition_and_unknown_ones_hold_it() -> None:
    """The minimum over every input partition; one never reported means no progress yet."""
    progress = InputProgress()
    assert progress.low_ms() is None
    progress.update(ProgressReport(3, ((0, T0 + 50), (1, T0 + 10))))
    assert progress.low_ms() is None  # partition 2 not reported by anyone yet
    progress.update(ProgressReport(3, ((2, T0 + 30),)))  # another intake's partitions
    assert progress.low_ms() == T0 + 10
    progress.update(ProgressReport(3, ((1, T0 + 40),)))
    assert progress.low_ms() == T0 + 30


def test_progress_never_goes_back() -> None:
    """A restarted intake re-reads from its last commit and reports less: ignored."""
    progress = InputProgress()
    progress.update(ProgressReport(1, ((0, T0 + 100),)))
    progress.update(ProgressReport(1, ((0, T0 + 1),)))
    assert progress.low_ms() == T0 + 100


def test_more_input_partitions_hold_until_reported() -> None:
    """Partitions added to the input topic wait for their first report."""
    progress = InputProgress(1, {0: T0})
    progress.update(ProgressReport(2, ()))
    assert progress.low_ms() is None
    progress.update(ProgressReport(1, ((1, T0 + 5),)))  # a stale count never shrinks it
    assert progress.partitions == 2
    assert progress.low_ms() == T0


# ---------------------------------------------------------------- the guarantee


def _catch_up(
    queues: list[deque[Event]], schedule: list[tuple[int, int]], wall_start: int
) -> tuple[list, list[Event]]:  # type: ignore[type-arg]
    """Read ``queues`` (the input partitions) as an intake would, in ``schedule``'s order.

    Each step takes up to ``size`` events from one partition (a fetch), then the receiver
    applies them and the intake's report; the wall clock moves 100 ms a step. Finally
    every partition is read out and idle, and the receiver's sessions are closed.
    """
    source = SourceProgress(IDLE)
    source.partitions = len(queues)
    source.assign(range(len(queues)), wall_start)
    receiver = InputProgress()
    sessionizer = Sessionizer(CFG, RULES, external_watermark=True)
    outputs = []
    late: list[Event] = []
    now = wall_start
    steps = deque(schedule)

    def step(partition: int, size: int) -> None:
        nonlocal now
        now += 100
        queue = queues[partition]
        batch = [queue.popleft() for _ in range(min(size, len(queue)))]
        if batch:
            source.observe({partition: max(e.ts_ms for e in batch)}, now)
        caught_up = {p for p, q in enumerate(queues) if not q}
        receiver.update(source.report(caught_up, now))
        low = receiver.low_ms()
        out = sessionizer.process(batch, now, None if low is None else low - LATENESS)
        late.extend(out.late)
        outputs.append(out)

    while steps:
        step(*steps.popleft())
    for partition in range(len(queues)):
        while queues[partition]:
            step(partition, 50)
    step(0, 0)
    now += IDLE
    step(0, 0)  # every partition idle: the watermark follows the clock
    outputs.append(sessionizer.close_all())
    return outputs, late


@st.composite
def partitioned_backlog(draw: st.DrawFn) -> tuple[list[Event], list[deque[Event]]]:
    """Traffic spread over input partitions, each in time order up to half the lateness.

    Keyed by visitor or at random (one visitor's events over several partitions); some
    partitions may get nothing.
    """
    events = draw(traffic())
    partitions = draw(st.integers(1, 5))
    by_visitor = draw(st.booleans())
    queues: list[list[tuple[int, Event]]] = [[] for _ in range(partitions)]
    for event in events:
        if by_visitor:
            partition = int(event.visitor_key[1:]) % partitions
        else:
            partition = draw(st.integers(0, partitions - 1))
        delay = draw(st.integers(0, LATENESS // 2))
        queues[partition].append((event.ts_ms + delay, event))
    ordered = [deque(e for _, e in sorted(q, key=lambda pair: pair[0])) for q in queues]
    return events, ordered


@settings(max_examples=300, deadline=None)
@given(
    backlog=partitioned_backlog(),
    schedule=st.lists(st.tuples(st.integers(0, 4), st.integers(1, 12)), max_size=40),
)
def test_any_reading_order_of_partitions_is_never_late_and_equals_replay(
    backlog: tuple[list[Event], list[deque[Event]]], schedule: list[tuple[int, int]]
) -> None:
    """Whatever order and batch sizes the partitions are read in: nothing late, rows exact."""
    events, queues = backlog
    schedule = [(p % len(queues), size) for p, size in schedule]
    outputs, late = _catch_up(queues, schedule, wall_start=T0 + 30 * 24 * HOUR)
    assert late == []
    expected = sessionize_all(events, CFG, RULES)
    sessions, orders = apply_outputs(outputs)
    assert sessions == {row.session_id: row for row in expected.sessions}
    assert orders == {row.order_key: row for row in expected.orders}


def test_one_partition_days_ahead_of_another_in_one_batch() -> None:
    """The measured failure: a batch spanning days on one partition, then the other's events."""
    fast = deque(ev(f"f{i}", T0 + i * HOUR, visitor="fast") for i in range(72))
    slow = deque(ev(f"s{i}", T0 + i * MINUTE, visitor="slow") for i in range(120))
    events = [*fast, *slow]
    outputs, late = _catch_up([fast, slow], [(0, 72), (1, 5), (1, 200)], wall_start=T0)
    assert late == []
    sessions, _ = apply_outputs(outputs)
    assert sessions == {row.session_id: row for row in sessionize_all(events, CFG, RULES).sessions}


def test_when_traffic_stops_the_clock_closes_sessions() -> None:
    """Every partition idle: the watermark follows the clock, idle grace + lateness behind."""
    source = SourceProgress(IDLE)
    source.partitions = 2
    source.assign([0, 1], now_ms=T0)
    receiver = InputProgress()
    sessionizer = Sessionizer(CFG, RULES, external_watermark=True)

    def step(now: int, events: list[Event], partition: int = 0) -> int:
        if events:
            source.observe({partition: max(e.ts_ms for e in events)}, now)
        receiver.update(source.report(caught_up={0, 1}, now_ms=now))
        low = receiver.low_ms()
        out = sessionizer.process(events, now, None if low is None else low - LATENESS)
        return out.closed

    # Live traffic: event time is the wall clock; partition 1 never gets any.
    assert step(T0, [ev("a", T0, visitor="x")]) == 0
    assert step(T0 + SECOND, [ev("b", T0 + SECOND, visitor="x")]) == 0
    last = T0 + SECOND
    due = last + CFG.session_timeout_ms + LATENESS + IDLE
    # Nothing more arrives: the session stays open until the clock passes its deadline.
    assert step(due - SECOND, []) == 0
    assert step(due + SECOND, []) == 1
