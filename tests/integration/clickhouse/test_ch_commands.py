"""`journey migrate` and `journey summary` run in-process on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chrows import DAY, T0, WORKED_EXAMPLE_SUMMARY, worked_example
from conftest import open_server

from streams.cli import main
from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.writer import ClickHouseWriter

pytestmark = pytest.mark.integration

FROM_TO = ["--from", "2024-05-01T00:00:00Z", "--to", "2024-05-02"]


def _target(kind: str, tmp_path: Path, server_url: str) -> list[str]:
    return (
        ["--embedded", str(tmp_path / "ch")] if kind == "embedded" else ["--clickhouse", server_url]
    )


@pytest.mark.parametrize("kind", ["embedded", "server"])
def test_migrate_command_applies_then_reports_up_to_date(
    kind: str, tmp_path: Path, server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`journey migrate` applies 0001 once, then says up to date; exit status 0 both times."""
    target = _target(kind, tmp_path, server_url)
    assert main(["migrate", *target]) == 0
    assert "applied 0001" in capsys.readouterr().out
    assert main(["migrate", *target]) == 0
    assert "up to date" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["embedded", "server"])
def test_summary_command_prints_the_worked_example(
    kind: str, tmp_path: Path, server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`journey summary --from --to --json` prints the hand-computed worked example as JSON."""
    target = _target(kind, tmp_path, server_url)
    assert main(["migrate", *target]) == 0
    backend = EmbeddedBackend(tmp_path / "ch") if kind == "embedded" else open_server(server_url)
    try:
        sessions, orders = worked_example()
        ClickHouseWriter(backend).write(sessions, [], orders)
    finally:
        backend.close()
    capsys.readouterr()
    assert main(["summary", *FROM_TO, *target, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == WORKED_EXAMPLE_SUMMARY


def test_summary_json_is_byte_identical_on_both_backends(
    tmp_path: Path, server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same rows print the same JSON text from chdb and from the 18.16 server."""
    printed = []
    for kind in ("embedded", "server"):
        target = _target(kind, tmp_path, server_url)
        main(["migrate", *target])
        backend = (
            EmbeddedBackend(tmp_path / "ch") if kind == "embedded" else open_server(server_url)
        )
        try:
            sessions, orders = worked_example()
            ClickHouseWriter(backend).write(sessions, [], orders)
        finally:
            backend.close()
        capsys.readouterr()
        main(["summary", *target, "--json"])
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1]
    assert json.loads(printed[0])["sessions"] == 7


def test_summary_command_on_an_empty_folder_prints_nulls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`journey summary` on an existing folder never migrated creates the tables, prints nulls."""
    folder = tmp_path / "new"
    folder.mkdir()
    assert main(["summary", "--embedded", str(folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["sessions"], summary["bounce_rate"], summary["nps"]) == (0, None, None)


def test_summary_command_on_a_missing_folder_fails_without_creating_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --embedded path is an error (exit 2), not an empty database full of zeros."""
    missing = tmp_path / "typo"
    assert main(["summary", "--embedded", str(missing), "--json"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not missing.exists()


def test_summary_command_rejects_bad_period(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed --from or --from after --to exits 2 with a message naming the option."""
    target = ["--embedded", str(tmp_path / "ch")]
    assert main(["summary", "--from", "yesterday", *target]) == 2
    assert "--from 'yesterday' is not ISO 8601" in capsys.readouterr().err
    assert main(["summary", "--from", "2024-05-02", "--to", "2024-05-01", *target]) == 2
    assert "must be before --to" in capsys.readouterr().err


def test_unreachable_server_is_a_storage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A server URL nobody listens on exits 2 with a message naming the server and the fix."""
    assert main(["migrate", "--clickhouse", "clickhouse://127.0.0.1:1/x"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1:1/x" in err
    assert "JOURNEY_CLICKHOUSE_URL" in err


def test_period_day_constant_matches_the_cli_period() -> None:
    """FROM_TO spans exactly [T0, T0 + DAY), the period of the worked example."""
    assert (T0, T0 + DAY) == (1_714_521_600_000, 1_714_608_000_000)
