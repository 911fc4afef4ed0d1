"""``journey generate`` through the real CLI: files, options, pacing, summary."""

from __future__ import annotations

import os
from bisect import bisect_right
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.cli import build_parser, main
from streams.errors import ConfigError
from streams.generator.batching import Record
from streams.generator.command import (
    TICK_MS,
    PumpStats,
    build_config,
    processes_for,
    pump,
    rate_note,
    shard_config,
)

BASE = ["generate", "--seed", "42", "--start", "2025-06-01T12:00:00Z"]


def generate(tmp_path: Path, name: str, *extra: str) -> bytes:
    """Run the CLI writing ``name`` in ``tmp_path``; return the file's bytes."""
    out = tmp_path / name
    assert main([*BASE, "--out", str(out), *extra]) == 0
    return out.read_bytes()


def test_out_file_round_trip_is_reproducible(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out writes N JSON lines; same seed and start give identical bytes, another seed not."""
    first = generate(tmp_path, "a.jsonl", "--events", "2500")
    second = generate(tmp_path, "b.jsonl", "--events", "2500")
    other = generate(tmp_path, "c.jsonl", "--events", "2500", "--seed", "43")
    assert first == second
    assert first != other
    lines = first.splitlines()
    assert len(lines) == 2500
    events = [orjson.loads(line) for line in lines]
    assert len({e["event_id"] for e in events}) == 2500
    start_ms = int(datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp() * 1000)
    first = events[0]["timestamp"]
    first_ms = (
        first
        if isinstance(first, int)
        else int(datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp() * 1000)
    )
    assert start_ms <= first_ms < start_ms + 60_000  # event time begins at --start
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("journey generate: 2500 events (0 malformed) in ")
    assert "seed 43" in summary


def test_batch_envelopes_hold_one_visitor_each(tmp_path: Path) -> None:
    """--batch-size K sends {"batch": [...]} of at most K events of a single visitor."""
    lines = generate(tmp_path, "b.jsonl", "--events", "3000", "--batch-size", "5").splitlines()
    total = 0
    for line in lines:
        batch = orjson.loads(line)["batch"]
        assert 1 <= len(batch) <= 5
        assert len({e["anonymous_id"] for e in batch}) == 1
        total += len(batch)
    assert total == 3000
    assert len(lines) < 3000  # some envelopes really carry several events


def test_malformed_lines_stay_one_per_line(tmp_path: Path) -> None:
    """With --malformed-ratio every message is still exactly one line of the file."""
    data = generate(tmp_path, "m.jsonl", "--events", "2000", "--malformed-ratio", "0.2")
    lines = data.splitlines()
    assert len(lines) == 2000
    broken = 0
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            broken += 1
    assert broken > 0


def test_spike_positions_as_fraction_or_seconds() -> None:
    """--spike-start/--spike-duration take fractions of the run or seconds with 's'."""
    parser = build_parser()
    args = parser.parse_args(
        ["generate", "--events", "1000", "--sim-rate", "10", "--scenario", "abandonment-spike"]
    )
    assert build_config(args).spike == (40.0, 60.0)  # 100 s run: 0.4 and 0.2 of it
    args = parser.parse_args(
        ["generate", "--duration", "0", "--scenario", "abandonment-spike",
         "--spike-start", "600s", "--spike-duration", "300s"]
    )  # fmt: skip
    config = build_config(args)
    assert config.spike == (600.0, 900.0)
    assert config.max_events is None
    assert config.duration_s is None


def test_unbounded_run_rejects_fractional_spike(capsys: pytest.CaptureFixture[str]) -> None:
    """A fraction of an endless run is meaningless: the command fails with status 2."""
    status = main(["generate", "--duration", "0", "--scenario", "abandonment-spike"])
    assert status == 2
    assert "give seconds" in capsys.readouterr().err


def test_start_without_offset_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    """--start must carry an explicit UTC offset."""
    assert main(["generate", "--start", "2025-06-01T12:00:00", "--out", "-"]) == 2
    assert "needs an offset" in capsys.readouterr().err


class FakeTime:
    """An injected clock: time moves only when the code under test sleeps or stalls."""

    def __init__(self, now: float = 100.0) -> None:
        """Start at ``now`` seconds with no sleeps recorded."""
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        """The current fake time."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the sleep and advance the fake time by it."""
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def uniform_records(rate: int, seconds: float, from_ms: int = 1_000) -> list[Record]:
    """``rate`` one-event records per second of event time for ``seconds``, from ``from_ms``."""
    return [Record(b"k", b"{}", from_ms + i * 1000 // rate, 1) for i in range(int(rate * seconds))]


def test_pump_paces_by_event_time() -> None:
    """Paced sending waits until wall time has reached a record's tick, never earlier."""
    fake = FakeTime()
    sent: list[int] = []
    records = [Record(b"k", b"{}", ts, 1) for ts in (1_000, 1_000, 3_500, 3_501)]
    stats = pump(records, lambda r: sent.append(r.ts_ms), 1_000, fake.clock, fake.sleep)
    assert (stats.records, stats.events, stats.last_ts_ms) == (4, 4, 3_501)
    assert sent == [1_000, 1_000, 3_500, 3_501]
    # 2.5 s to the third record; the fourth is 1 ms later, so it waits for the next tick.
    assert fake.sleeps == pytest.approx([2.5, TICK_MS / 1000])


def test_pump_sleeps_once_per_tick_and_sends_what_is_due() -> None:
    """At 5,000 events/s the pump sleeps once per 10 ms tick, each record within a tick late."""
    fake = FakeTime()
    records = uniform_records(5_000, 2.0)
    lateness: list[float] = []

    def send(record: Record) -> None:
        lateness.append(fake.now - 100.0 - (record.ts_ms - 1_000) / 1000)

    stats = pump(records, send, 1_000, fake.clock, fake.sleep)
    assert stats.records == stats.events == 10_000
    assert len(fake.sleeps) == 2_000 // TICK_MS  # one per tick: 10 ms, 20 ms ... 2,000 ms
    assert min(lateness) >= -1e-9  # never before its time
    assert max(lateness) <= TICK_MS / 1000 + 1e-9
    assert stats.max_behind_s == pytest.approx(0.0, abs=1e-9)


def test_pump_catches_up_after_a_stall_without_running_ahead() -> None:
    """A 0.5 s stall is caught up by sending the backlog at once; sending never runs ahead."""
    fake = FakeTime()
    records = uniform_records(2_000, 3.0)
    due_times = [r.ts_ms - 1_000 for r in records]
    ahead: list[int] = []
    sleeps_at_send: list[int] = []

    def send(record: Record) -> None:
        elapsed_ms = (fake.now - 100.0) * 1000
        sent_so_far = len(sleeps_at_send) + 1
        ahead.append(sent_so_far - bisect_right(due_times, elapsed_ms + 1e-6))
        sleeps_at_send.append(len(fake.sleeps))
        if len(sleeps_at_send) == 2_000:  # one second in, the broker stalls the sender
            fake.now += 0.5

    stats = pump(records, send, 1_000, fake.clock, fake.sleep)
    assert stats.records == 6_000
    assert max(ahead) <= 0  # never more sent than due: the long-term rate holds
    # The 0.5 s backlog (about 1,000 records) went out back to back, without a sleep.
    first_after = next(i for i, r in enumerate(records) if r.ts_ms > 2_000)
    backlog = sleeps_at_send[first_after : first_after + 990]
    assert len(set(backlog)) == 1
    assert stats.max_behind_s == pytest.approx(0.5, abs=TICK_MS / 1000)
    assert stats.behind_s == 0.0  # caught up by the end
    # The run still ends on schedule: 3 s of event time took 3 s (+ under a tick).
    assert fake.now - 100.0 == pytest.approx(3.0, abs=TICK_MS / 1000)


def test_pump_clock_starts_when_the_first_record_is_ready() -> None:
    """The model's warm-up before its first record does not turn into a backlog burst."""
    fake = FakeTime()

    def warming_up() -> Iterator[Record]:
        fake.now += 0.6  # the model plans its warm-up sessions first
        yield from uniform_records(1_000, 1.0)

    stats = pump(warming_up(), lambda r: None, 1_000, fake.clock, fake.sleep)
    assert stats.records == 1_000
    assert stats.max_behind_s == pytest.approx(0.0, abs=1e-9)
    assert fake.now - 100.0 == pytest.approx(0.6 + 1.0, abs=TICK_MS / 1000)


def test_pump_of_nothing_sends_nothing() -> None:
    """An empty run returns at once with zero counts and no sleep."""
    fake = FakeTime()
    stats = pump([], lambda r: None, 1_000, fake.clock, fake.sleep)
    assert (stats.records, stats.events, stats.last_ts_ms) == (0, 0, None)
    assert fake.sleeps == []


def test_pump_without_pacing_never_sleeps() -> None:
    """Without pace_from_ms records go as fast as possible, whatever their times."""
    fake = FakeTime()
    stats = pump(uniform_records(1_000, 5.0), lambda r: None, None, fake.clock, fake.sleep)
    assert stats.records == 5_000
    assert fake.sleeps == []


def test_rate_note_names_the_cause() -> None:
    """A paced run under 95 % of --rate says why: the model's density or a lagging sender."""
    on_target = PumpStats(records=1_990, events=1_990)
    assert rate_note(200.0, on_target, elapsed_s=10.0, event_span_s=10.0) is None
    thin_model = PumpStats(records=4_040, events=4_040, max_behind_s=0.01)
    note = rate_note(2_000.0, thin_model, elapsed_s=10.0, event_span_s=10.0)
    assert note is not None
    assert "asked for --rate 2,000 events/s, delivered 404 events/s" in note
    assert "the traffic model made only 404 events per second of event time" in note
    assert "fell behind" not in note
    lagging = PumpStats(records=30_000, events=30_000, behind_s=4.0, max_behind_s=4.0)
    note = rate_note(5_000.0, lagging, elapsed_s=10.0, event_span_s=6.0)
    assert note is not None
    assert "delivered 3,000 events/s" in note
    assert "sending was 4.00 s behind event time at the end (4.00 s at worst)" in note
    assert "traffic model" not in note
    caught_up = PumpStats(records=4_040, events=4_040, behind_s=0.0, max_behind_s=0.6)
    note = rate_note(2_000.0, caught_up, elapsed_s=10.0, event_span_s=10.0)
    assert note is not None
    assert "behind" not in note  # a stall caught up from is not why the rate was missed


def test_processes_follow_the_rate_and_split_the_run() -> None:
    """--processes 0 adds a process per 8,000 events/s (a file: one); parts add up exactly."""
    parser = build_parser()

    def processes(*extra: str) -> int:
        return processes_for(parser.parse_args(["generate", *extra]))

    assert processes("--rate", "5000") == 1
    assert processes("--rate", "20000") == min(3, os.cpu_count() or 1)
    assert processes("--rate", "20000", "--processes", "4") == 4
    assert processes("--rate", "20000", "--out", "x.jsonl") == 1
    with pytest.raises(ConfigError, match="one process"):
        processes("--processes", "2", "--out", "x.jsonl")
    config = build_config(parser.parse_args(["generate", "--rate", "9000", "--events", "10001"]))
    parts = [shard_config(config, shard, 3) for shard in range(3)]
    assert [p.max_events for p in parts] == [3334, 3334, 3333]
    assert all(p.events_per_s == 3000 for p in parts)
