"""``journey generate`` through the real CLI: files, options, pacing, summary."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.cli import build_parser, main
from streams.generator.batching import Record
from streams.generator.command import build_config, pump

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


def test_pump_paces_by_event_time() -> None:
    """Paced sending waits until wall time has advanced as far as event time."""
    now = [100.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sent: list[int] = []
    records = [Record(b"k", b"{}", ts, 1) for ts in (1_000, 1_000, 3_500, 3_501)]
    count = pump(records, lambda r: sent.append(r.ts_ms), 1_000, lambda: now[0], sleep)
    assert count == 4
    assert sent == [1_000, 1_000, 3_500, 3_501]
    assert sleeps == [2.5]  # the 1 ms step is below the sleep threshold
