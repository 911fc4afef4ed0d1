"""PartitionState: exactly-once application of redelivered messages and checkpoint restore."""

from __future__ import annotations

import random

from streams.engine.events import Event
from streams.engine.rows import SessionRow
from streams.engine.sessionizer import EngineOutput, SessionConfig, sessionize_all
from streams.engine.stages import StageRules
from streams.worker.partition import WATERMARK_KEY, PartitionState

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


def _messages(events: list[Event], size: int) -> list[list[Event]]:
    return [events[i : i + size] for i in range(0, len(events), size)]


def _fold(outputs: list[EngineOutput]) -> dict[str, SessionRow]:
    rows: dict[str, SessionRow] = {}
    for out in outputs:
        for sid in out.removed_session_ids:
            rows.pop(sid, None)
        for row in out.sessions:
            rows[row.session_id] = row
    return rows


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
    expected = {row.session_id: row for row in sessionize_all(events, CONFIG, RULES).sessions}
    assert _fold(outputs) == expected


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
    assert restarted.redelivered == sum(len(m) for m in messages[redeliver_from:crash_at])
    expected = {row.session_id: row for row in sessionize_all(events, CONFIG, RULES).sessions}
    assert _fold(outputs) == expected


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
    expected = {row.session_id: row for row in sessionize_all(events, CONFIG, RULES).sessions}
    assert _fold(outputs) == expected


def test_checkpoint_writes_only_changed_visitors_and_the_watermark() -> None:
    """A checkpoint holds the visitors touched since the previous one, plus a moved watermark."""
    state = PartitionState(0, CONFIG, RULES)
    state.apply([Event("a1", "page_view", T0, "a", anonymous_id="a")], 0, now_ms=0)
    state.apply([Event("b1", "page_view", T0 + 1, "b", anonymous_id="b")], 1, now_ms=0)
    keys = [key for key, _ in state.checkpoint().writes]
    assert keys == [b"a", b"b", WATERMARK_KEY]
    state.apply([Event("a2", "page_view", T0 + 2, "a", anonymous_id="a")], 2, now_ms=0)
    assert [key for key, _ in state.checkpoint().writes] == [b"a", WATERMARK_KEY]
    assert state.checkpoint().writes == []


def test_restored_watermark_keeps_late_events_late() -> None:
    """After a restart, an event the first run called late is still late."""
    lateness = CONFIG.allowed_lateness_ms
    first = PartitionState(0, CONFIG, RULES)
    first.apply([Event("a1", "page_view", T0, "a", anonymous_id="a")], 0, now_ms=0)
    first.apply([Event("b1", "page_view", T0 + 3 * 3_600_000, "b", anonymous_id="b")], 1, 0)
    restarted = PartitionState(0, CONFIG, RULES, _records([first.checkpoint().writes]))
    assert restarted.sessionizer.watermark_ms == T0 + 3 * 3_600_000 - lateness
    out = restarted.apply([Event("c1", "page_view", T0 + 60_000, "c", anonymous_id="c")], 2, 0)
    assert [ev.event_id for ev in out.late] == ["c1"]


def test_open_session_count_follows_opens_closes_and_merges() -> None:
    """The open-session gauge source counts opened minus closed minus merged away."""
    # 30 min of allowed lateness, so the gap-filling event below is accepted, not late.
    state = PartitionState(0, SessionConfig(allowed_lateness_ms=30 * MINUTE), RULES)
    state.apply([Event("a1", "page_view", T0, "a", anonymous_id="a")], 0, 0)
    state.apply([Event("a2", "page_view", T0 + 40 * MINUTE, "a", anonymous_id="a")], 1, 0)
    assert state.open_sessions == 2
    # A gap-filling event merges the two sessions into one.
    state.apply([Event("a3", "page_view", T0 + 20 * MINUTE, "a", anonymous_id="a")], 2, 0)
    assert state.open_sessions == 1
    # An event hours later moves the watermark past the session: it closes, z opens.
    state.apply([Event("z", "page_view", T0 + 10 * 3_600_000, "z", anonymous_id="z")], 3, 0)
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


def test_clock_does_not_move_the_watermark_while_a_backlog_waits() -> None:
    """With messages waiting, the wall clock never closes sessions; after the grace it may."""
    config = SessionConfig(idle_grace_ms=5_000)
    state = PartitionState(0, config, RULES)
    state.apply([Event("a1", "page_view", T0, "a", anonymous_id="a")], 0, now_ms=1_000)
    wall = T0 + 10 * 3_600_000  # hours after the event: an idle advance would close it
    for step in range(10):
        out = state.advance(wall + step * 1_000, backlog=True)
        assert out.sessions == []
        assert state.open_sessions == 1
    # No backlog, but the grace since the last backlog has not passed yet.
    assert state.advance(wall + 12_000, backlog=False).sessions == []
    closed = state.advance(wall + 9_000 + 5_000 + 1, backlog=False)
    assert [row.closed for row in closed.sessions] == [1]
    assert state.open_sessions == 0


def test_fully_redelivered_message_leaves_the_watermark_alone() -> None:
    """A restarted partition given only already-applied events keeps its watermark."""
    first = PartitionState(0, CONFIG, RULES)
    first.apply([Event("a1", "page_view", T0, "a", anonymous_id="a")], 5, now_ms=0)
    restarted = PartitionState(0, CONFIG, RULES, _records([first.checkpoint().writes]))
    before = restarted.sessionizer.watermark_ms
    out = restarted.apply(
        [Event("a1", "page_view", T0, "a", anonymous_id="a")], 5, now_ms=T0 + 10 * 3_600_000
    )
    assert restarted.redelivered == 1
    assert out.late == []
    assert out.sessions == []
    assert restarted.sessionizer.watermark_ms == before


def test_gap_reports_skipped_offsets_and_survives_a_restart() -> None:
    """Offsets are applied in order; a message past a gap names the offsets to fetch first."""
    state = PartitionState(0, CONFIG, RULES)
    assert state.gap(7) is None  # nothing known yet: any first offset is accepted
    state.apply([Event("a1", "page_view", T0, "a", anonymous_id="a")], 7, now_ms=0)
    assert state.gap(8) is None
    assert state.gap(5) is None  # a redelivery, not a gap
    assert state.gap(11) == range(8, 11)
    state.apply([Event("a2", "page_view", T0 + 1, "a", anonymous_id="a")], 8, now_ms=0)
    state.apply([Event("a0", "page_view", T0 - 1, "a", anonymous_id="a")], 3, now_ms=0)
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
    state.apply([Event("a1", "page_view", T0, "a", anonymous_id="a")], 0, now_ms=0)
    restarted = PartitionState(2, CONFIG, RULES, _records([state.checkpoint().writes]))
    assert restarted.checkpointed
    assert restarted.next_offset == 1
