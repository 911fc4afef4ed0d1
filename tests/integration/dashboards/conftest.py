"""Fixtures: generated traffic replayed into chdb and into a fresh database on the real server.

Every command runs as the real ``journey`` CLI in a subprocess with a clean environment
(no ``JOURNEY_*`` setting leaks in from the shell). The server must be reachable at
``JOURNEY_TEST_CLICKHOUSE_URL``; the tests fail, never skip, when it is not.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_support import fresh_server_url, open_server, run_journey

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.embedded import EmbeddedBackend

#: The traffic every ClickHouse dashboard query runs over (the brief's fixed recipe).
GENERATE_ARGS = ("--events", "20000", "--seed", "21", "--start", "2026-11-20T10:00:00Z")


@pytest.fixture(scope="session")
def traffic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 generated events (seed 21, from 2026-11-20T10:00Z) as JSON Lines."""
    path = tmp_path_factory.mktemp("traffic") / "traffic.jsonl"
    run_journey("generate", *GENERATE_ARGS, "--out", str(path))
    return path


@pytest.fixture(scope="session")
def replayed_folder(tmp_path_factory: pytest.TempPathFactory, traffic_file: Path) -> Path:
    """An embedded (chdb) folder holding the replayed traffic."""
    folder = tmp_path_factory.mktemp("chdb") / "clickhouse"
    run_journey("replay", str(traffic_file), "--embedded", str(folder))
    return folder


@pytest.fixture(scope="session")
def replayed_server_url(traffic_file: Path) -> Iterator[str]:
    """A fresh server database holding the replayed traffic; dropped afterwards."""
    url = fresh_server_url("journey_dash")
    open_server(url).close()  # fail early, with the message above, when the server is down
    try:
        run_journey("replay", str(traffic_file), "--clickhouse", url)
        yield url
    finally:
        cleanup = open_server(url)
        cleanup.drop_database()
        cleanup.close()


@pytest.fixture(scope="module", params=["chdb", "server"])
def replayed(
    request: pytest.FixtureRequest, replayed_folder: Path, replayed_server_url: str
) -> Iterator[ClickHouse]:
    """The replayed traffic on each backend in turn: chdb 26.x, then the 18.16 server."""
    backend: ClickHouse
    if request.param == "chdb":
        backend = EmbeddedBackend(replayed_folder)
    else:
        backend = open_server(replayed_server_url)
    try:
        yield backend
    finally:
        backend.close()
