"""Fixtures: an embedded chdb backend in tmp_path and a fresh database on the real server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import support
from support import database_url

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.migrations import apply_migrations
from streams.clickhouse.server import ServerBackend


def fresh_server_url() -> str:
    """The test server's URL with its database replaced by a unique, not yet existing one."""
    return database_url(f"journey_test_{uuid.uuid4().hex[:12]}")


def open_server(url: str) -> ServerBackend:
    """Connect to the test server or fail (never skip) with what to do."""
    return support.open_server(
        url,
        advice="Start it (the test command does: clickhouse-server --config-file "
        "/tmp/ch/config.xml) or set JOURNEY_TEST_CLICKHOUSE_URL.",
    )


@pytest.fixture
def server_url() -> Iterator[str]:
    """A unique database URL on the test server; the database is dropped afterwards."""
    url = fresh_server_url()
    yield url
    cleanup = open_server(url)
    cleanup.drop_database()
    cleanup.close()


@pytest.fixture
def server(server_url: str) -> Iterator[ServerBackend]:
    """A migrated ServerBackend on a fresh database."""
    backend = open_server(server_url)
    apply_migrations(backend)
    yield backend
    backend.close()


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedBackend]:
    """A migrated EmbeddedBackend in a fresh folder under tmp_path."""
    backend = EmbeddedBackend(tmp_path / "clickhouse")
    apply_migrations(backend)
    yield backend
    backend.close()


@pytest.fixture(params=["embedded", "server"])
def backend(request: pytest.FixtureRequest) -> ClickHouse:
    """Each test using it runs once on chdb and once on the 18.16 server."""
    chosen: ClickHouse = request.getfixturevalue(request.param)
    return chosen
