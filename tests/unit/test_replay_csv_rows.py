"""journey replay --format csv: cells Python reads as numbers and JSON does not, bad rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streams.engine.events import Event
from streams.engine.sessionizer import SessionConfig
from streams.engine.stages import StageRules
from streams.replay import ReplayReport, replay_files

NOW = 1_717_243_200_000  # 2024-06-01T12:00:00Z
HEADER = b"event_id,event_type,timestamp,anonymous_id,properties.quantity,properties.price\n"


class RawEvents:
    """The replay's writer, keeping only the accepted events."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, *tables: Any) -> None:
        return None

    def write_raw_events(self, events: list[Event]) -> None:
        self.events += events


def _replay(tmp_path: Path, body: bytes) -> tuple[ReplayReport, list[Event]]:
    path = tmp_path / "export.csv"
    path.write_bytes(HEADER + body)
    writer = RawEvents()
    config, rules = SessionConfig(), StageRules.default()
    report = replay_files([path], "csv", writer, config, rules, raw_events=True, now_ms=NOW)
    return report, writer.events


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (b"e,t,1717239600000,v,\xc2\xb2,1", "bad_field:properties.quantity"),  # "²": int() raised
        (b"e,t,1717239600000,v," + b"9" * 5000 + b",1", "bad_field:properties.quantity"),
        (b"e,t,1717239600000,v,1,nan", "bad_field:properties.price"),  # float() takes NaN
        (b"e,t,1717239600000,v,1,inf", "bad_field:properties.price"),
        (b"e,t,1717239600000,v,1,1e999", "bad_field:properties.price"),
        (b"e,t,1717239600000,v,1,1_000", "bad_field:properties.price"),
        (b"e,t,\xd9\xa3,v,1,1", "bad_timestamp"),  # "٣" is a digit to str.isdigit
        (b"e\xc0,t,1717239600000,v,1,1", "not_utf8"),  # open(encoding="utf-8") raised
    ],
)
def test_a_bad_cell_rejects_its_row_only(tmp_path: Path, row: bytes, reason: str) -> None:
    """The row is counted with its reason; the rows around it are still replayed."""
    body = b"a,t,1717239600000,v,2,9.5\n" + row + b"\nb,t,1717239600001,v,,\n"
    report, events = _replay(tmp_path, body)
    assert (report.lines, report.events, dict(report.reasons)) == (3, 2, {reason: 1})
    assert report.first_rejections == [(str(tmp_path / "export.csv"), 3, reason)]
    assert [(e.event_id, e.quantity, e.price) for e in events] == [("a", 2, 9.5), ("b", None, None)]


def test_a_row_the_csv_module_cannot_split_is_invalid_csv(tmp_path: Path) -> None:
    """A field over the csv module's size limit is one invalid_csv row, at its own line."""
    body = (
        b'a,t,1717239600000,v,1,1\nb,t,"' + b"x" * 140_000 + b'",v,1,1\nc,t,1717239600001,v,1,1\n'
    )
    report, events = _replay(tmp_path, body)
    assert dict(report.reasons) == {"invalid_csv": 1}
    assert report.first_rejections[0][1:] == (3, "invalid_csv")
    assert [e.event_id for e in events] == ["a", "c"]
