"""Bad lines in a replayed file: counted, the first five shown, never fatal unless --strict."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from replay_support import journey, summary_text, target_args

T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z
MIN = 60_000


def _event(eid: str, etype: str, ts: Any, **properties: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": eid, "event_type": etype, "timestamp": ts}
    event["anonymous_id"] = "visitor-1"
    if properties:
        event["properties"] = properties
    return event


def _bad_file(tmp_path: Path) -> Path:
    """Nine lines: five good events (two in a batch), six rejections (one inside that batch)."""
    two_days_ahead = int(time.time() * 1000) + 48 * 60 * MIN
    no_id = _event("x", "page_view", T0 + 5 * MIN)
    del no_id["event_id"]
    lines = [
        json.dumps(_event("e1", "page_view", T0)),  # 1
        '{"event_id": "broken", "event_type": "page_view",',  # 2 invalid_json
        json.dumps(
            {
                "batch": [
                    _event("e2", "product_view", T0 + MIN, product_id="p1", price=20.0),
                    _event("bad-price", "product_view", T0 + MIN, product_id="p2", price=-1.0),
                    _event("e3", "add_to_cart", T0 + 2 * MIN, product_id="p1", price=20.0),
                ]
            }
        ),  # 3: one bad element (negative price) between two good ones
        json.dumps(no_id),  # 4 missing event_id
        json.dumps(_event("e4", "begin_checkout", T0 + 3 * MIN)),  # 5
        json.dumps(_event("bad-ts", "page_view", "yesterday")),  # 6 bad timestamp
        json.dumps(_event("refund", "purchase", T0 + 6 * MIN, order_id="o0", revenue=-5.0)),  # 7
        json.dumps(_event("future", "page_view", two_days_ahead)),  # 8 future timestamp
        json.dumps(_event("e5", "purchase", T0 + 4 * MIN, order_id="o1", revenue=42.5)),  # 9
    ]
    path = tmp_path / "with-bad-lines.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_lines_are_counted_listed_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Six bad inputs are counted by reason, the first five listed with line numbers, exit 0."""
    path = _bad_file(tmp_path)
    folder = str(tmp_path / "clickhouse")
    status, out = journey(capsys, "replay", str(path), *target_args(folder))
    assert status == 0, out
    report = out.splitlines()
    assert re.match(r"replay: 9 lines, 5 events accepted, 6 rejected, 0 duplicates dropped; ", out)
    by_reason = report[1].removeprefix("rejected by reason: ").split(", ")
    assert sorted(by_reason) == sorted(
        [
            "invalid_json 1",
            "negative_price 1",
            "missing_field:event_id 1",
            "bad_timestamp 1",
            "negative_revenue 1",
            "future_timestamp 1",
        ]
    )
    assert report[2:] == [
        f"  {path}:2: invalid_json",
        f"  {path}:3: negative_price",
        f"  {path}:4: missing_field:event_id",
        f"  {path}:6: bad_timestamp",
        f"  {path}:7: negative_revenue",
        "  ... and 1 more",
    ]
    # Lines after the bad ones were still processed: all five good events are in one session.
    summary = json.loads(summary_text(capsys, folder))
    assert (summary["sessions"], summary["events"], summary["page_views"]) == (1, 5, 2)
    assert (summary["orders"], summary["revenue"], summary["conversion_rate"]) == (1, 42.5, 1.0)


def test_strict_replay_exits_1_on_bad_lines_but_still_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --strict the same file exits 1, after the same report."""
    path = _bad_file(tmp_path)
    status, out = journey(
        capsys, "replay", str(path), "--strict", *target_args(str(tmp_path / "clickhouse"))
    )
    assert status == 1
    assert "5 events accepted, 6 rejected" in out
    assert f"  {path}:2: invalid_json" in out


def test_strict_replay_of_a_clean_file_exits_0(
    otto_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--strict does not fail a file without bad lines (the OTTO fixture)."""
    status, out = journey(
        capsys, "replay", str(otto_file), "--strict", *target_args(str(tmp_path / "clickhouse"))
    )
    assert status == 0, out
    assert "862 events accepted, 0 rejected" in out
