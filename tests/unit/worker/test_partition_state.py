"""PartitionState: exactly-once application of redelivered messages and checkpoint restore."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from streams.engine.events import Event
from streams.engine.progress import ProgressReport
from streams.engine.rows import SessionRow
from streams.engine.sessionizer import EngineOutput, SessionConfig, sessionize_all
from streams.engine.stages import StageRules
from streams.engine.state import Corrupt, VisitorState
from streams.worker.codec import Forwarded
from streams.worker.partition import (
    WATERMARK_KEY,
    OwnRecord,
    PartitionState,
    decode_own_record,
)

T0 = 1_700_000_000_000
MINUTE = 60_000
CONFIG = SessionConfig()
RULES = StageRules.default()


def _traffic(seed: int, visitors: int = 12, per_visitor: int = 15) -> list[Event]:
    """Per-visitor event sequences with some > 30 min gaps, interleaved in time order."""
    rng = random.Random(seed)
    types = ["page_view", "product_view", "add_to_cart", "page_ping", "purchase", "search"]
    events = []
    for v in range(visitors):
        ts = T0 + rng.randrange(0, 20 * MINUTE)
        for i in range(per_visitor):
            ts += rng.choice([10_000, 45_000, 3 * MINUTE, 40 * MINUTE])
            kind = rng.choice(types)
            extra = {"order_id": f"o-{v}-{i}", "revenue": 10.0} if kind == "purchase" else {}
            events.append(
                Event(f"e-{v}-{i}", kind, ts, f"v{v}", anonymous_id=f"v{v}", **extra)  # type: ignore[arg-type]
            )
    events.sort(key=lambda e: e.ts_ms)
    return events


class _Intake:
    """Forwards events as the worker's intake does: sources in order, then a report.

    Each event is one input message of ``partition`` (the next offset there); the report
    holds the highest event time forwarded from every input partition so far.
    """

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions
        self.offsets = [0] * partitions
        self.tops: dict[int, int] = {}

    def forward(self, events: Sequence[Event], partition: int = 0) -> Forwarded:
        sources = []
        for ev in events:
            sources.append((partition, self.offsets[partition], 0))
            self.offsets[partition] += 1
            self.tops[partition] = max(self.tops.get(partition, ev.ts_ms), ev.ts_ms)
        report = ProgressReport(self.partitions, tuple(sorted(self.tops.items())))
        return Forwarded(list(events), sources, report)


def _messages(events: list[Event], size: int) -> list[Forwarded]:
    intake = _Intake()
    return [intake.forward(events[i : i + size]) for i in range(0, len(events), size)]


def _one(*events: Event, intake: _Intake | None = None) -> Forwarded:
    return (intake or _Intake()).forward(events)


def _fold(outputs: list[EngineOutput]) -> dict[str, SessionRow]:
    rows: dict[str, SessionRow] = {}
    for out in outputs:
        for sid in out.removed_session_ids:
            rows.pop(sid, None)
        for row in out.sessions:
            rows[row.session_id] = row
    return rows


def _replayed(events: list[Event]) -> dict[str, SessionRow]:
    """The session rows of a replay of ``events`` (the reference), by id."""
    return {row.session_id: row for row in sessionize_all(events, CONFIG, RULES).sessions}


def _records(checkpoints: list[list[tuple[bytes, bytes | None]]]) -> list[tuple[bytes, bytes]]:
    """What a compacted changelog holds after these checkpoint writes (latest per key)."""
    table: dict[bytes, bytes] = {}
    for writes in checkpoints:
        for key, value in writes:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    return list(table.items())


def test_uninterrupted_run_equals_replay() -> None:
    """Messages applied in order then closed give the same final rows as sessionize_all."""
    events = _traffic(1)
    state = PartitionState(0, CONFIG, RULES)
    outputs = [
        state.apply(msg, offset, now_ms=0) for offset, msg in enumerate(_messages(events, 7))
    ]
    outputs.append(state.sessionizer.close_all())
    assert _fold(outputs) == _replayed(events)


def test_crash_after_checkpoint_before_ack_skips_redelivered_messages() -> None:
    """Messages redelivered after a checkpoint are not applied twice; rows equal replay."""
    events = _traffic(2)
    messages = _messages(events, 5)
    crash_at = len(messages) // 2
    first = PartitionState(0, CONFIG, RULES)
    outputs = [first.apply(msg, off, now_ms=0) for off, msg in enumerate(messages[:crash_at])]
    checkpoint = first.checkpoint()
    # The crash: acks were lost, so Kafka redelivers from an offset well before the checkpoint.
    restarted = PartitionState(0, CONFIG, RULES, _records([checkpoint.writes]))
    redeliver_from = crash_at - 3
    outputs += [
        restarted.apply(msg, off, now_ms=0)
        for off, msg in enumerate(messages[redeliver_from:], start=redeliver_from)
    ]
    outputs.append(restarted.sessionizer.close_all())
    assert restarted.redelivered == sum(len(m.events) for m in messages[redeliver_from:crash_at])
    assert _fold(outputs) == _replayed(events)


def test_crash_before_checkpoint_reprocesses_from_the_last_one() -> None:
    """Work after the last checkpoint is redone from it and gives the same rows."""
    events = _traffic(3)
    messages = _messages(events, 4)
    first = PartitionState(0, CONFIG, RULES)
    checkpoints = []
    outputs = []
    for off, msg in enumerate(messages):
        outputs.append(first.apply(msg, off, now_ms=0))
        if off == 10:
            checkpoints.append(first.checkpoint().writes)
        if off == 20:
            break  # crash: messages 11..20 were applied but never checkpointed nor acked
    restarted = PartitionState(0, CONFIG, RULES, _records(checkpoints))
    outputs += [restarted.apply(msg, off, now_ms=0) for off, msg in enumerate(messages) if off > 10]
    outputs.append(restarted.sessionizer.close_all())
    assert _fold(outputs) == _replayed(events)


def test_checkpoint_writes_only_changed_visitors_and_the_watermark() -> None:
    """A checkpoint holds the visitors touched since the previous one, plus a changed own record."""
    state = PartitionState(0, CONFIG, RULES)
    intake = _Intake()
    state.apply(_one(Event("a1", "page_view", T0, "a", anonymous_id="a"), intake=intake), 0, 0)
    state.apply(_one(Event("b1", "page_view", T0 + 1, "b", anonymous_id="b"), intake=intake), 1, 0)
    keys = [key for key, _ in state.checkpoint().writes]
    assert sorted(keys[:-1]) == [b"a", b"b"]  # visitors in no particular order
    assert keys[-1] == WATERMARK_KEY
    state.apply(_one(Event("a2", "page_view", T0 + 2, "a", anonymous_id="a"), intake=intake), 2, 0)
    assert [key for key, _ in state.checkpoint().writes] == [b"a", WATERMARK_KEY]
    assert state.checkpoint().writes == []


def test_restored_watermark_keeps_late_events_late() -> None:
    """After a restart, an event the first run called late is still late."""
    lateness = CONFIG.allowed_lateness_ms
    first = PartitionState(0, CONFIG, RULES)
    intake = _Intake()
    first.apply(_one(Event("a1", "page_view", T0, "a", anonymous_id="a"), intake=intake), 0, 0)
    hours_later = Event("b1", "page_view", T0 + 3 * 3_600_000, "b", anonymous_id="b")
    first.apply(_one(hours_later, intake=intake), 1, 0)
    restarted = PartitionState(0, CONFIG, RULES, _records([first.checkpoint().writes]))
    assert restarted.sessionizer.watermark_ms == T0 + 3 * 3_600_000 - lateness
    late = Event("c1", "page_view", T0 + 60_000, "c", anonymous_id="c")
    out = restarted.apply(_one(late, intake=intake), 2, 0)
    assert [ev.event_id for ev in out.late] == ["c1"]


def test_open_session_count_follows_opens_closes_and_merges() -> None:
    """The open-session gauge source counts opened minus closed minus merged away."""
    # 30 min of allowed lateness, so the gap-filling event below is accepted, not late.
    state = PartitionState(0, SessionConfig(allowed_lateness_ms=30 * MINUTE), RULES)
    intake = _Intake()
    state.apply(_one(Event("a1", "page_view", T0, "a", anonymous_id="a"), intake=intake), 0, 0)
    # An earlier event re-identifies the session (a new id, the old one removed): still one.
    a0 = Event("a0", "page_view", T0 - 5 * MINUTE, "a", anonymous_id="a")
    out = state.apply(_one(a0, intake=intake), 1, 0)
    assert (out.opened, len(out.removed_session_ids)) == (1, 1)
    assert state.open_sessions == 1
    a2 = Event("a2", "page_view", T0 + 40 * MINUTE, "a", anonymous_id="a")
    state.apply(_one(a2, intake=intake), 2, 0)
    assert state.open_sessions == 2
    # A gap-filling event merges the two sessions into one.
    a3 = Event("a3", "page_view", T0 + 20 * MINUTE, "a", anonymous_id="a")
    state.apply(_one(a3, intake=intake), 3, 0)
    assert state.open_sessions == 1
    # An event hours later moves the watermark past the session: it closes, z opens.
    z = Event("z", "page_view", T0 + 10 * 3_600_000, "z", anonymous_id="z")
    state.apply(_one(z, intake=intake), 4, 0)
    assert state.open_sessions == 1


def test_forwarded_batches_are_split_under_the_size_limit() -> None:
    """A partition's batch is cut into JSON arrays under the limit, keeping every event."""
    import orjson

    from streams.worker.codec import chunk_forwarded as _chunks

    encoded = [orjson.dumps([i, "x" * (i % 50)]) for i in range(1000)]
    chunks = _chunks(encoded, 2000)
    assert all(len(chunk) <= 2000 for chunk in chunks)
    assert [row for chunk in chunks for row in orjson.loads(chunk)] == [
        orjson.loads(item) for item in encoded
    ]
    assert _chunks([b"[1]"], 2) == [b"[[1]]"]  # a lone oversized event still goes out


def test_fully_redelivered_message_leaves_the_watermark_alone() -> None:
    """A restarted partition given only already-applied events keeps its watermark."""
    first = PartitionState(0, CONFIG, RULES)
    message = _one(Event("a1", "page_view", T0, "a", anonymous_id="a"))
    first.apply(message, 5, now_ms=0)
    restarted = PartitionState(0, CONFIG, RULES, _records([first.checkpoint().writes]))
    before = restarted.sessionizer.watermark_ms
    out = restarted.apply(message, 5, now_ms=T0 + 10 * 3_600_000)
    assert restarted.redelivered == 1
    assert out.late == []
    assert out.sessions == []
    assert restarted.sessionizer.watermark_ms == before


def test_gap_reports_skipped_offsets_and_survives_a_restart() -> None:
    """Offsets are applied in order; a message past a gap names the offsets to fetch first."""
    state = PartitionState(0, CONFIG, RULES)
    intake = _Intake()
    assert state.gap(7) is None  # nothing known yet: any first offset is accepted
    state.apply(_one(Event("a1", "page_view", T0, "a", anonymous_id="a"), intake=intake), 7, 0)
    assert state.gap(8) is None
    assert state.gap(5) is None  # a redelivery, not a gap
    assert state.gap(11) == range(8, 11)
    state.apply(_one(Event("a2", "page_view", T0 + 1, "a", anonymous_id="a"), intake=intake), 8, 0)
    state.apply(_one(Event("a0", "page_view", T0 - 1, "a", anonymous_id="a"), intake=intake), 3, 0)
    assert state.next_offset == 9  # a redelivered lower offset does not move it back
    restarted = PartitionState(0, CONFIG, RULES, _records([state.checkpoint().writes]))
    assert restarted.next_offset == 9
    assert restarted.gap(12) == range(9, 12)
    # A partition record written before the next offset existed (watermark only) loads too.
    legacy = PartitionState(0, CONFIG, RULES, [(WATERMARK_KEY, (T0).to_bytes(8, "big"))])
    assert legacy.next_offset is None
    assert legacy.sessionizer.watermark_ms == T0
    assert legacy.checkpointed
    assert restarted.next_offset is not None


def test_partition_never_checkpointed_expects_every_message_from_the_log_start() -> None:
    """The crash-test orphans: a first delivered message past the log start is a gap.

    A worker killed before its first checkpoint acknowledged nothing, so the next one must
    apply the partition from its first message. Accepting a later first message left the
    rows written from the earlier ones (by the killed worker) without a tombstone.
    """
    state = PartitionState(2, CONFIG, RULES)
    assert not state.checkpointed
    state.expect_from(0)
    assert state.gap(37) == range(0, 37)
    state.expect_from(5)  # a known offset is never replaced
    assert state.next_offset == 0
    state.apply(_one(Event("a1", "page_view", T0, "a", anonymous_id="a")), 0, now_ms=0)
    restarted = PartitionState(2, CONFIG, RULES, _records([state.checkpoint().writes]))
    assert restarted.checkpointed
    assert restarted.next_offset == 1


def _split_by_input(events: list[Event], partitions: int) -> list[list[Event]]:
    """The events of each input partition (visitor number modulo ``partitions``), in order."""
    parts: list[list[Event]] = [[] for _ in range(partitions)]
    for ev in events:
        parts[int(ev.visitor_key[1:]) % partitions].append(ev)
    return parts


def test_input_partitions_read_unevenly_make_nothing_late() -> None:
    """One input partition read to its end before another starts: no event late, rows exact.

    The catch-up case of issue 11: a single watermark from the highest event time seen
    called most of the slower partition late.
    """
    events = _traffic(5, visitors=16, per_visitor=20)
    first, second = _split_by_input(events, 2)
    intake = _Intake(partitions=2)
    messages = [intake.forward(first[i : i + 6], partition=0) for i in range(0, len(first), 6)]
    messages += [intake.forward(second[i : i + 6], partition=1) for i in range(0, len(second), 6)]
    state = PartitionState(0, CONFIG, RULES)
    outputs = [state.apply(msg, offset, now_ms=0) for offset, msg in enumerate(messages)]
    reading_first = outputs[: len(first) // 6]
    assert not any(out.closed for out in reading_first), "partition 1 unknown: nothing closes"
    assert sum(len(out.late) for out in outputs) == 0
    assert sum(out.closed for out in outputs) > 0, "the watermark moved once both reported"
    outputs.append(state.sessionizer.close_all())
    assert _fold(outputs) == _replayed(events)


def test_reforwarded_events_are_dropped_by_source_never_late() -> None:
    """Events the intake forwards again (re-read input) are duplicates, even once closed."""
    events = _traffic(6)
    messages = _messages(events, 5)
    state = PartitionState(0, CONFIG, RULES)
    outputs = [state.apply(msg, off, now_ms=0) for off, msg in enumerate(messages[:-1])]
    assert sum(out.closed for out in outputs) > 0
    # The intake crashed before committing, re-read from message 2 on, and this time its
    # batch also reaches the last, new message: new by-visitor offsets, old sources.
    offset = len(messages)
    for msg in messages[2:-2]:
        outputs.append(state.apply(msg, offset, now_ms=0))
        offset += 1
    straddling = Forwarded(
        messages[-2].events + messages[-1].events,
        messages[-2].sources + messages[-1].sources,
        messages[-1].report,
    )
    outputs.append(state.apply(straddling, offset, now_ms=0))
    assert sum(len(out.late) for out in outputs) == 0
    reforwarded = sum(len(m.events) for m in messages[2:-1])
    assert sum(out.duplicates for out in outputs) == reforwarded
    outputs.append(state.sessionizer.close_all())
    assert _fold(outputs) == _replayed(events)


def test_input_progress_and_sources_survive_a_restart() -> None:
    """After a restart the watermark waits for the same input partitions, and drops the same."""
    events = _traffic(7)
    first, second = _split_by_input(events, 2)
    intake = _Intake(partitions=2)
    early = intake.forward(first[:10], partition=0)
    state = PartitionState(0, CONFIG, RULES)
    state.apply(early, 0, now_ms=0)
    restarted = PartitionState(0, CONFIG, RULES, _records([state.checkpoint().writes]))
    assert restarted.input.partitions == 2
    assert restarted.input.progress == {0: max(ev.ts_ms for ev in first[:10])}
    assert restarted.input.low_ms() is None  # input partition 1 still unknown
    assert restarted.sources == {0: (9, 0)}
    again = restarted.apply(early, 1, now_ms=0)  # re-forwarded after the restart
    assert again.duplicates == 10
    assert again.sessions == []
    restarted.apply(intake.forward(second[:1], partition=1), 2, now_ms=0)
    assert restarted.input.low_ms() == min(first[9].ts_ms, second[0].ts_ms)


def test_forwarded_message_round_trip_and_legacy_arrays() -> None:
    """Events, sources and the report survive the wire; the earlier forms still decode."""
    import orjson

    from streams.engine.events import EVENT_FIELDS
    from streams.engine.progress import ProgressReport as Report
    from streams.worker.codec import (
        chunk_forwarded,
        decode_forwarded,
        encode_forwarded,
        encode_report,
        encode_topic,
        forwarded_message,
    )

    events = _traffic(8, visitors=3, per_visitor=4)
    encoded = [encode_forwarded(ev, 3, 100 + n, n % 2) for n, ev in enumerate(events)]
    report = Report(8, ((0, T0), (3, T0 + 5)))
    (chunk,) = chunk_forwarded(encoded, 1 << 20)
    topic = encode_topic('click"stream')
    decoded = decode_forwarded(forwarded_message(topic, chunk, encode_report(report)))
    assert decoded.topic == 'click"stream'
    assert decoded.events == events
    assert decoded.sources == [(3, 100 + n, n % 2) for n in range(len(events))]
    assert decoded.report == report
    assert decode_forwarded(forwarded_message(topic, chunk)).report is None
    legacy = orjson.dumps([[getattr(ev, name) for name in EVENT_FIELDS] for ev in events])
    old = decode_forwarded(legacy)
    assert old.events == events
    assert old.sources == []
    assert old.report is None
    # Fields inline after the source, as workers wrote them before events were structs.
    inline = [
        [3, 100 + n, 0, *(getattr(ev, f) for f in EVENT_FIELDS)] for n, ev in enumerate(events)
    ]
    earlier = decode_forwarded(
        orjson.dumps({"t": "clicks", "e": inline, "r": {"n": 8, "p": [[0, T0]]}})
    )
    assert (earlier.events, earlier.topic, earlier.report) == (
        events,
        "clicks",
        Report(8, ((0, T0),)),
    )
    assert earlier.sources == [(3, 100 + n, 0) for n in range(len(events))]


def test_copy_of_a_closed_session_stays_dropped_after_a_partial_checkpoint() -> None:
    """A crash after a visitor's record reached the changelog but not the partition's own.

    The restored sources are older than the visitor's record; the redelivered message is
    skipped for that visitor, yet its source must still count, or the intake's copy of the
    same event (re-read input) would reopen a session that had already closed.
    """
    intake = _Intake()
    state = PartitionState(0, CONFIG, RULES)
    state.apply(intake.forward([Event("u1", "page_view", T0 - 1, "u", anonymous_id="u")]), 0, 0)
    base = _records([state.checkpoint().writes])  # the last complete checkpoint
    original = intake.forward([Event("v1", "page_view", T0, "v", anonymous_id="v")])
    copy = Forwarded(original.events, original.sources, original.report)  # re-read input
    later = intake.forward([Event("w1", "page_view", T0 + 3 * 3_600_000, "w", anonymous_id="w")])
    state.apply(original, 1, 0)
    assert state.apply(copy, 2, 0).duplicates == 1
    assert state.apply(later, 3, 0).closed == 2  # u's and v's sessions close
    partial = state.checkpoint()
    v_record = [(key, value) for key, value in partial.visitors if key == b"v"]
    assert v_record
    # Crash: v's record was delivered; w's, u's and the partition's own record were not.
    restarted = PartitionState(0, CONFIG, RULES, _merge(base, v_record))
    redone = [restarted.apply(msg, off, 0) for off, msg in ((1, original), (2, copy), (3, later))]
    assert redone[1].duplicates == 1
    assert sum(len(out.late) for out in redone) == 0
    assert [row for out in redone for row in out.sessions if row.visitor_key == "v"] == []
    assert restarted.store["v"].closed_sessions == 1


def _merge(
    records: list[tuple[bytes, bytes]], newer: list[tuple[bytes, bytes | None]]
) -> list[tuple[bytes, bytes]]:
    """A compacted changelog after ``records`` and then the ``newer`` writes."""
    return _records([[*records], newer])


def test_a_new_input_topic_starts_sources_and_progress_afresh() -> None:
    """Offsets of a new input topic start low again: not copies of the old topic's events."""
    state = PartitionState(0, CONFIG, RULES)
    old = _Intake()
    message = old.forward([Event(f"a{i}", "page_view", T0 + i, "a", anonymous_id="a")
                           for i in range(5)])  # fmt: skip
    state.apply(Forwarded(message.events, message.sources, message.report, "clicks"), 0, 0)
    assert state.sources == {0: (4, 0)}
    new = _Intake()
    fresh = new.forward([Event("b0", "page_view", T0 + 10, "b", anonymous_id="b")])
    out = state.apply(Forwarded(fresh.events, fresh.sources, fresh.report, "clicks-v2"), 1, 0)
    assert out.duplicates == 0
    assert state.sources == {0: (0, 0)}
    restarted = PartitionState(0, CONFIG, RULES, _records([state.checkpoint().writes]))
    assert restarted.input_topic == "clicks-v2"


@pytest.mark.parametrize(
    ("hot_ms", "hot_limit"),
    [(0, 1_000), (5_000, 1_000), (60_000, 4)],
    ids=["only-the-last-checkpoint", "for-5-seconds", "at-most-4"],
)
def test_visitors_dropped_from_memory_at_checkpoints_continue_exactly(
    hot_ms: int, hot_limit: int
) -> None:
    """Checkpoints keep in memory only recently written visitors; the rest reload from bytes.

    The same messages, with checkpoints after random messages or with none, give the same
    rows as a replay. After each checkpoint (one per simulated second) the in-memory
    states are the visitors it wrote (the last ``hot_limit`` of them) plus, from the
    checkpoints of the last ``hot_ms``, those the limit leaves (the oldest checkpoints' go
    first), and every visitor's record is in the shared store.
    """
    events = _traffic(11, visitors=20, per_visitor=12)
    messages = _messages(events, 3)
    rng = random.Random(5)
    shared: dict[bytes, bytes] = {b"\x00other": b"not a visitor"}
    state = PartitionState(0, CONFIG, RULES, cold=shared, hot_ms=hot_ms, hot_limit=hot_limit)
    plain = PartitionState(0, CONFIG, RULES)
    outputs, plain_outputs = [], []
    history: list[tuple[int, set[str]]] = []  # (checkpoint time, visitors it wrote)
    for off, msg in enumerate(messages):
        outputs.append(state.apply(msg, off, now_ms=0))
        plain_outputs.append(plain.apply(msg, off, now_ms=0))
        if rng.random() < 0.3:
            now_ms = off * 1_000
            checkpoint = state.checkpoint(now_ms)
            order = [key.decode() for key, value in checkpoint.visitors if value]
            written = set(order)
            history.append((now_ms, written))
            # Expected hot set, from the newest checkpoint back, within the time and limit
            # (of a checkpoint that wrote more than the limit, the last it wrote).
            expected = set(order[-hot_limit:])
            for at, keys in reversed(history[:-1]):
                if at <= now_ms - hot_ms or len(expected | keys) > hot_limit:
                    break
                expected |= keys
            assert set(state.store.hot) == expected
            assert {ev.visitor_key for ev in events[: 3 * (off + 1)]} <= {
                key.decode() for key in shared if key[:1] != b"\x00"
            }
    outputs.append(state.sessionizer.close_all())
    plain_outputs.append(plain.sessionizer.close_all())
    assert _fold(outputs) == _fold(plain_outputs) == _replayed(events)
    assert shared[b"\x00other"] == b"not a visitor"


def test_late_event_of_a_visitor_out_of_memory_keeps_its_record() -> None:
    """A late event for a visitor held only as its record moves the offset, nothing else.

    The visitor's open session stays (its record is rewritten with the new applied
    offset, not deleted), and a redelivery of the late event's message is skipped.
    """
    state = PartitionState(0, CONFIG, RULES, hot_ms=0)
    intake = _Intake()
    state.apply(intake.forward([Event("a1", "page_view", T0, "idle", anonymous_id="idle")]), 0, 0)
    state.checkpoint()
    busy = Event("b1", "page_view", T0 + 15 * MINUTE, "busy", anonymous_id="busy")
    state.apply(intake.forward([busy]), 1, 0)  # the watermark passes T0 + 5 min
    state.checkpoint()
    assert "idle" not in state.store.hot
    late = intake.forward([Event("a0", "page_view", T0 + MINUTE, "idle", anonymous_id="idle")])
    assert [ev.event_id for ev in state.apply(late, 2, 0).late] == ["a0"]
    writes = dict(state.checkpoint().visitors)
    assert writes[b"idle"] is not None
    restored = state.store["idle"]
    assert [s.first_id for s in restored.sessions] == ["a1"]
    assert state.apply(late, 2, 0).late == []  # the redelivered message is skipped
    assert state.redelivered == 1


# -- input taken directly (no by-visitor hop) ----------------------------------------------


def _direct_batches(
    events: list[Event], size: int, start: int = 0
) -> list[tuple[list[Event], list[tuple[int, int, int]], ProgressReport]]:
    """``events`` as one-event input messages at offsets from ``start``, read ``size`` at a time.

    Each batch comes with the report an intake owning the only input partition makes
    after reading it (the highest event time so far).
    """
    batches = []
    top: int | None = None
    for at in range(0, len(events), size):
        chunk = events[at : at + size]
        top = max([ev.ts_ms for ev in chunk] + ([] if top is None else [top]))
        sources = [(0, start + at + i, 0) for i in range(len(chunk))]
        batches.append((chunk, sources, ProgressReport(1, ((0, top),))))
    return batches


@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_direct_input_in_any_batch_size_equals_replay(size: int) -> None:
    """Events applied straight from the input, in batches of any size: the replay's rows."""
    events = _traffic(31)
    state = PartitionState(0, CONFIG, RULES, direct=True)
    outputs = [
        state.apply_direct("in", chunk, sources, report, now_ms=0)
        for chunk, sources, report in _direct_batches(events, size)
    ]
    outputs.append(state.sessionizer.close_all())
    assert state.redelivered == 0
    assert _fold(outputs) == _replayed(events)


def test_direct_restart_from_an_older_partition_record_skips_what_visitors_hold() -> None:
    """A crash while a checkpoint was written: visitor records durable, the partition's not.

    The restarted state re-reads the input from the older partition record's source; a
    visitor whose record holds an event's offset skips it (``redelivered``), the others
    take it, and the rows equal replay.
    """
    events = _traffic(32)
    batches = _direct_batches(events, 5)
    first = PartitionState(0, CONFIG, RULES, direct=True)
    outputs = [first.apply_direct("in", *batch, now_ms=0) for batch in batches[:6]]
    older = first.checkpoint().writes
    outputs += [first.apply_direct("in", *batch, now_ms=0) for batch in batches[6:12]]
    newer = first.checkpoint()
    # Only the visitor records of the second checkpoint reached the changelog.
    restarted = PartitionState(0, CONFIG, RULES, _records([older, newer.visitors]), direct=True)
    assert restarted.recorded_direct
    resume = restarted.sources[0][0] + 1
    assert resume == 30  # the last event of the first six batches of five
    outputs += [
        restarted.apply_direct("in", *batch, now_ms=0)
        for batch in _direct_batches(events[resume:], 5, start=resume)
    ]
    outputs.append(restarted.sessionizer.close_all())
    written = {key for key, _ in newer.visitors}
    expected_skips = sum(1 for ev in events[30:60] if ev.visitor_key.encode() in written)
    assert restarted.redelivered == expected_skips > 0
    assert _fold(outputs) == _replayed(events)


def test_the_input_mode_is_recorded_with_the_partition() -> None:
    """A record written with the direct path says so; one written through the hop does not."""
    events = _traffic(33, visitors=2, per_visitor=3)
    direct = PartitionState(0, CONFIG, RULES, direct=True)
    direct.apply_direct("in", *_direct_batches(events, 10)[0], now_ms=0)
    hop = PartitionState(0, CONFIG, RULES)
    hop.apply(_one(*events), 0, now_ms=0)
    assert PartitionState(0, CONFIG, RULES, direct.checkpoint().writes).recorded_direct
    assert not PartitionState(0, CONFIG, RULES, hop.checkpoint().writes).recorded_direct


@pytest.mark.parametrize("seed", [31, 32, 33])
def test_checkpoint_encoded_bit_by_bit_holds_the_state_at_its_take(seed: int) -> None:
    """Messages applied while a checkpoint is encoded change nothing in it.

    One state checkpoints at once; its twin takes the same checkpoint, encodes two
    visitors, applies the next messages (which change pending visitors: the store encodes
    those first) and only then finishes. Both checkpoints hold the same records, and a
    restart from the twin's, with the later messages redelivered, equals replay.
    """
    events = _traffic(seed)
    messages = _messages(events, 3)
    at, until = len(messages) // 3, len(messages) // 3 + 8
    whole = PartitionState(0, CONFIG, RULES, hot_limit=3)
    sliced = PartitionState(0, CONFIG, RULES, hot_limit=3)
    outputs = []
    for off, msg in enumerate(messages[:at]):
        whole.apply(msg, off, now_ms=0)
        outputs.append(sliced.apply(msg, off, now_ms=0))
    expected = whole.checkpoint(now_ms=0)
    pending = sliced.begin_checkpoint()
    assert len(pending.pending) > 2  # some left to encode while messages come
    pending.encode_some(2)
    for off, msg in enumerate(messages[at:until], start=at):
        outputs.append(sliced.apply(msg, off, now_ms=0))
    assert sliced.store.snapshot is None or sliced.store.snapshot is pending
    taken = pending.finish(now_ms=0)
    assert sliced.store.snapshot is None
    assert dict(taken.visitors) == dict(expected.visitors)
    assert taken.own == expected.own
    for off, msg in enumerate(messages[at:until], start=at):
        whole.apply(msg, off, now_ms=0)
    assert dict(sliced.checkpoint(now_ms=0).writes) == dict(whole.checkpoint(now_ms=0).writes)

    # A crash after the take: everything after it is redelivered to a restarted worker.
    restarted = PartitionState(0, CONFIG, RULES, _records([taken.writes]))
    outputs += [
        restarted.apply(msg, off, now_ms=0) for off, msg in enumerate(messages[at:], start=at)
    ]
    outputs.append(restarted.sessionizer.close_all())
    assert restarted.redelivered == 0
    assert _fold(outputs) == _replayed(events)


def _own_record(state: PartitionState) -> bytes:
    (own,) = [value for key, value in state.checkpoint().writes if key == WATERMARK_KEY]
    assert own is not None
    return own


def test_partition_records_of_the_wrong_shape_are_corrupt() -> None:
    """Short records, bad JSON and wrong JSON shapes decode to Corrupt; good ones load."""
    state = PartitionState(0, CONFIG, RULES)
    state.apply(_one(*_traffic(3, visitors=2, per_visitor=2)), 0, now_ms=0)
    own = _own_record(state)
    assert isinstance(decode_own_record(own), OwnRecord)
    head = own[:16]
    assert decode_own_record(head[:8]) == OwnRecord(int.from_bytes(head[:8], "big", signed=True))
    bad_values = [
        b"", b"\x00" * 7, b"\x00" * 12, head + b"garbage", head + b"[]", head + b"{}",
        head + b'{"n": "1", "p": [], "s": []}', head + b'{"n": 1, "p": [[0]], "s": []}',
        head + b'{"n": 1, "p": [], "s": [[0, 1]]}', head + b'{"n": 1, "p": [[3, 5]], "s": []}',
        head + b'{"n": 10000000000, "p": [], "s": []}',
        head + b'{"n": 1, "p": [], "s": [], "t": 1}',
        head[:8] + (-5).to_bytes(8, "big", signed=True),
    ]  # fmt: skip
    for value in bad_values:
        assert isinstance(decode_own_record(value), Corrupt), value
    for end in range(17, len(own)):
        assert isinstance(decode_own_record(own[:end]), Corrupt), end


def test_a_corrupt_partition_record_is_as_if_never_checkpointed() -> None:
    """The partition loads without it: it expects its messages from the log start."""
    state = PartitionState(0, CONFIG, RULES, [(WATERMARK_KEY, b"\x00" * 16 + b"{garbage")])
    assert not state.checkpointed
    assert state.next_offset is None
    state.expect_from(0)
    assert state.gap(3) == range(0, 3)


def test_a_corrupt_visitor_record_starts_that_visitor_empty_and_the_rest_goes_on() -> None:
    """A record that cannot be decoded is a new visitor's state; other visitors are intact."""
    events = _traffic(9, visitors=3, per_visitor=6)
    first = [ev for ev in events if ev.ts_ms < events[9].ts_ms]
    state = PartitionState(0, CONFIG, RULES)
    state.apply(_one(*first), 0, now_ms=0)
    records = _records([state.checkpoint().writes])
    broken = {key: (b"\x00" * 8 + b"\x04\xff\xff\xff\x7f" if key == b"v1" else value)
              for key, value in records}  # fmt: skip
    assert b"v1" in broken
    restarted = PartitionState(0, CONFIG, RULES, broken.items())
    assert restarted.store["v1"] == VisitorState(visitor_key="v1")
    assert restarted.store["v0"] == state.store["v0"]
    rest = [ev for ev in events if ev.ts_ms >= events[9].ts_ms]
    restarted.apply(_one(*rest), 1, now_ms=0)  # nothing stops: v1 goes on from empty
    assert restarted.next_offset == 2
