"""Fixtures for the replay tests: input files, a fresh server database, a clean environment."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# reference_sql (the engine-free SQL reference) lives with the ClickHouse tests; pytest puts
# only this folder on sys.path when these tests run alone.
_CLICKHOUSE_TESTS = str(Path(__file__).resolve().parent.parent / "clickhouse")
if _CLICKHOUSE_TESTS not in sys.path:
    sys.path.insert(0, _CLICKHOUSE_TESTS)

import support  # noqa: E402
from replay_support import GENERATED_ARGS, otto_events  # noqa: E402
from support import database_url, is_journey_setting  # noqa: E402

from streams.cli import main  # noqa: E402
from streams.clickhouse.server import ServerBackend  # noqa: E402


def _clear_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if is_journey_setting(name):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _journey_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every command with the documented defaults, whatever JOURNEY_* the shell exports."""
    _clear_settings(monkeypatch)


def open_server(url: str) -> ServerBackend:
    """Connect to the test server or fail (never skip) saying what to do."""
    return support.open_server(
        url,
        advice="Start it (make up, or clickhouse-server --config-file /tmp/ch/config.xml) "
        "or set JOURNEY_TEST_CLICKHOUSE_URL.",
    )


@pytest.fixture
def server_url() -> Iterator[str]:
    """A URL naming a fresh database on the test server; the database is dropped afterwards."""
    url = database_url(f"journey_replay_{uuid.uuid4().hex[:12]}")
    open_server(url).close()  # fail early, with the message above, when the server is down
    yield url
    cleanup = open_server(url)
    cleanup.drop_database()
    cleanup.close()


@pytest.fixture(scope="session")
def otto_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The OTTO fixture converted to v1 events, one JSON object per line."""
    path = tmp_path_factory.mktemp("otto") / "otto.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for event in otto_events():
            out.write(json.dumps(event) + "\n")
    return path


@pytest.fixture(scope="session")
def generated_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 generated messages (seed 11, 2 % malformed) written by ``journey generate``."""
    path = tmp_path_factory.mktemp("generated") / "generated.jsonl"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _clear_settings(monkeypatch)
        status = main(["generate", *GENERATED_ARGS, "--out", str(path)])
    assert status == 0, "journey generate failed"
    return path
