"""A failure of the ``journey`` command is one line saying what to fix; --debug adds the trace.

Each case runs the real command in a child process, with no service listening where it
points, and reads its exit status and stderr as a user would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from streams.errors import ConfigError, StorageError, explain
from streams.summary import parse_instant_ms


def journey(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``journey ARGS`` with no JOURNEY_* setting but ``env``; bounded to 60 s."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOURNEY_")}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=base | (env or {}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def unused_port() -> int:
    """A local TCP port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def one_line(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The single stderr line of a failed ``journey COMMAND``; fails on anything more."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"journey {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("value", ["²", "yesterday", "2024-13-01", "-5", "99999999999999999999"])
def test_a_bad_time_is_one_line_naming_the_option(value: str, tmp_path: Path) -> None:
    """`summary --from X` with X not a time exits 2 with one line and an example of a time."""
    line = one_line(journey("summary", "--from", value, cwd=tmp_path), "summary")
    assert f"--from {value!r} is not ISO 8601" in line
    assert "2024-05-01T12:00:00Z" in line


def test_debug_prints_the_traceback_before_the_line(tmp_path: Path) -> None:
    """--debug, before or after the command, shows the traceback and then the same line."""
    for args in (["--debug", "summary", "--from", "²"], ["summary", "--from", "²", "--debug"]):
        result = journey(*args, cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith("Traceback (most recent call last):"), result.stderr
        assert "ConfigError" in result.stderr
        last = result.stderr.splitlines()[-1]
        assert last.startswith("journey summary: error: --from '²' is not ISO 8601"), last


@pytest.mark.parametrize("command", ["summary", "migrate", "replay"])
def test_an_unreachable_server_is_one_line(command: str, tmp_path: Path) -> None:
    """A server URL nobody answers on: one line naming the server and the setting to fix."""
    (tmp_path / "e.jsonl").write_text("{}\n", encoding="utf-8")
    url = f"clickhouse://127.0.0.1:{unused_port()}/shop"
    args = [command, "--clickhouse", url] + (["e.jsonl"] if command == "replay" else [])
    line = one_line(journey(*args, cwd=tmp_path), command)
    assert "is unreachable" in line
    assert "JOURNEY_CLICKHOUSE_URL" in line


def test_a_worker_without_kafka_says_so_in_one_line(tmp_path: Path) -> None:
    """`journey worker` with no broker at JOURNEY_BROKERS: one line, no client warnings first."""
    port = unused_port()
    env = {"JOURNEY_BROKERS": f"127.0.0.1:{port}", "JOURNEY_DATA_DIR": str(tmp_path / "data")}
    line = one_line(journey("worker", cwd=tmp_path, env=env), "worker")
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in line
    assert "JOURNEY_BROKERS" in line


@pytest.mark.parametrize("command", ["summary", "report"])
def test_reading_a_missing_embedded_folder_fails_and_creates_nothing(
    command: str, tmp_path: Path
) -> None:
    """summary and report on a mistyped --embedded path fail; the folder is not created."""
    missing = tmp_path / "jouney-db"
    args = [command, "--embedded", str(missing)]
    if command == "report":
        args += ["--out", str(tmp_path / "report.html")]
    line = one_line(journey(*args, cwd=tmp_path), command)
    assert f"--embedded {str(missing)!r}: no such folder" in line
    assert not missing.exists()
    assert not (tmp_path / "report.html").exists()


def test_the_default_embedded_folder_missing_names_the_options(tmp_path: Path) -> None:
    """With no --embedded and no data dir yet, summary says where it looked and what to pass."""
    line = one_line(journey("summary", cwd=tmp_path), "summary")
    assert "no embedded ClickHouse in '.journey/clickhouse'" in line
    assert "--embedded DIR or --clickhouse URL" in line
    assert not (tmp_path / ".journey").exists()


def test_a_bad_flag_shows_the_usage_of_its_subcommand(tmp_path: Path) -> None:
    """A misspelled option prints `usage: journey summary ...`, not the top-level usage."""
    result = journey("summary", "--form", "2024-05-01", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: journey summary "), result.stderr
    assert "journey summary: error: unrecognized arguments: --form 2024-05-01" in result.stderr


def test_a_bug_keeps_its_traceback() -> None:
    """Only known failures become one line: an unexpected exception is not explained."""
    assert explain(KeyError("x")) is None
    assert explain(ValueError("invalid literal")) is None


def test_known_failures_are_explained_as_their_message() -> None:
    """JourneyError subclasses give their message; an OS error names its file and reason."""
    assert explain(StorageError("server down; start it")) == "server down; start it"
    error = PermissionError(13, "Permission denied", "/data/report.html")
    assert explain(error) == "/data/report.html: Permission denied"
    assert explain(OSError(98, "Address already in use")) == "Address already in use"


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2024-05-01", 1_714_521_600_000),
        ("2024-05-01T02:00:00+02:00", 1_714_521_600_000),
        ("2024-05-01T00:00:00Z", 1_714_521_600_000),
        ("1714521600000", 1_714_521_600_000),
        (" 0 ", 0),
    ],
)
def test_times_are_read_as_utc_epoch_ms(text: str, ms: int) -> None:
    """Dates, offsets, Z and epoch ms give the instant's epoch ms (naive means UTC)."""
    assert parse_instant_ms(text, "--from") == ms


@pytest.mark.parametrize("text", ["²", "١٢٣", "1e3", "", "0001-01-01", "9999-12-31T23:00:00-14:00"])
def test_what_is_not_a_time_is_a_config_error(text: str) -> None:
    """Non-ASCII digits, other notations and instants outside 1970-9999 are ConfigErrors."""
    with pytest.raises(ConfigError, match="--to"):
        parse_instant_ms(text, "--to")
