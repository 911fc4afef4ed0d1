"""`journey replay` reads each file in the format its extension names; a hopeless run fails.

Files are replayed into embedded folders (chdb) by the real command: in this process for
the counts, in a child process where the exit status and stderr are what is pinned.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from replay_support import replay

from streams.cli import main
from streams.replay import file_format

pytestmark = pytest.mark.integration

T0 = 1_790_000_000_000  # 2026-09-21T14:13:20Z
HEADER = ["event_id", "event_type", "timestamp", "anonymous_id"]


def _events(n: int, visitor: str = "v1") -> list[dict[str, Any]]:
    return [
        {"event_id": f"{visitor}-{i}", "event_type": "page_view", "timestamp": T0 + i * 60_000,
         "anonymous_id": visitor}
        for i in range(n)
    ]  # fmt: skip


def _write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def _write_csv(path: Path, events: list[dict[str, Any]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for event in events:
            writer.writerow([event[name] for name in HEADER])
    return path


def _journey_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``journey ARGS`` in a child process without JOURNEY_* settings; bounded to 120 s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEY_")}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.csv", "csv"), ("a.CSV", "csv"), ("a.jsonl", "jsonl"), ("a.ndjson", "jsonl"),
     ("a.json", "jsonl"), ("export.2024.csv", "csv")],
)  # fmt: skip
def test_the_extension_names_the_format(name: str, fmt: str) -> None:
    """.csv is CSV; .jsonl, .ndjson and .json are JSON lines, whatever the case."""
    assert file_format(Path(name), None) == fmt
    other = "jsonl" if fmt == "csv" else "csv"
    assert file_format(Path(name), other) == other  # --format wins


def test_a_csv_and_a_jsonl_file_are_each_read_in_their_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One run over x.csv and y.jsonl, without --format, accepts every line of both."""
    csv_file = _write_csv(tmp_path / "x.csv", _events(3, "csv-visitor"))
    jsonl_file = _write_jsonl(tmp_path / "y.jsonl", _events(4, "jsonl-visitor"))
    out = replay(capsys, str(tmp_path / "db"), str(csv_file), str(jsonl_file))
    assert "7 lines, 7 events accepted, 0 rejected" in out
    assert "2 sessions" in out


def test_an_unknown_extension_needs_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """events.txt is refused naming --format (nothing written); with --format csv it is read."""
    path = _write_csv(tmp_path / "events.txt", _events(2))
    status = main(["replay", str(path), "--embedded", str(tmp_path / "db")])
    err = capsys.readouterr().err
    assert status == 2
    assert "cannot tell the format of" in err
    assert "--format jsonl or --format csv" in err
    assert not (tmp_path / "db").exists()
    out = replay(capsys, str(tmp_path / "db"), str(path), "--format", "csv")
    assert "2 lines, 2 events accepted, 0 rejected" in out


def test_map_is_refused_for_json_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--map with a file read as JSON lines is an error, not silently ignored."""
    path = _write_jsonl(tmp_path / "e.jsonl", _events(2))
    status = main(
        ["replay", str(path), "--map", "timestamp=ts", "--embedded", str(tmp_path / "db")]
    )
    assert status == 2
    assert "--map applies to CSV files only" in capsys.readouterr().err


def test_map_is_applied_to_a_csv_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .csv file whose time column is `ts` is read with --map timestamp=ts (no --format)."""
    path = _write_csv(tmp_path / "e.csv", _events(2), header=[*HEADER[:2], "ts", HEADER[3]])
    out = replay(capsys, str(tmp_path / "db"), str(path), "--map", "timestamp=ts")
    assert "2 lines, 2 events accepted, 0 rejected" in out


@pytest.mark.parametrize(
    ("name", "content", "fix"),
    [
        ("csv-named.jsonl", "csv", "the input is not JSON lines; if it is CSV, pass --format csv"),
        ("json-named.csv", "jsonl", "the input read as CSV holds JSON; pass --format jsonl"),
        ("bad-header.csv", "renamed", "--map FIELD=COLUMN"),
        ("events.jsonl", "contract", "the events do not follow the contract"),
    ],
)
def test_a_run_that_rejects_every_line_fails_naming_the_fix(
    name: str, content: str, fix: str, tmp_path: Path
) -> None:
    """Every line rejected: the report, then one error line with the likely fix; exit 2."""
    path = tmp_path / name
    if content == "csv":
        _write_csv(path, _events(3))
    elif content == "jsonl":
        _write_jsonl(path, _events(3))
    elif content == "renamed":
        _write_csv(path, _events(3), header=["id", "type", "time", "visitor"])
    else:
        _write_jsonl(path, [{**e, "timestamp": "yesterday"} for e in _events(3)])
    result = _journey_process("replay", name, "--embedded", "db", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "0 events accepted" in result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("journey replay: error: every one of the "), lines[0]
    assert fix in lines[0]


def test_some_lines_rejected_is_still_a_success(tmp_path: Path) -> None:
    """One good line among bad ones: exit 0 (only --strict makes bad lines an error)."""
    path = tmp_path / "mixed.jsonl"
    path.write_text(json.dumps(_events(1)[0]) + "\nnot json\n", encoding="utf-8")
    result = _journey_process("replay", "mixed.jsonl", "--embedded", "db", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 events accepted, 1 rejected" in result.stdout
    assert result.stderr == ""


def test_a_missing_file_is_refused_before_any_database_is_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped file name fails naming it, and the embedded folder is not created."""
    status = main(["replay", str(tmp_path / "evnets.jsonl"), "--embedded", str(tmp_path / "db")])
    assert status == 2
    assert "evnets.jsonl: no such file" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()
