"""Helpers shared by the dashboard tests: the journey CLI, a clean environment, the server."""

from __future__ import annotations

import uuid

import support
from support import JOURNEY as JOURNEY  # re-exported: the tests import these from here
from support import clean_env as clean_env
from support import database_url

from streams.clickhouse.server import ServerBackend


def run_journey(*args: str, timeout_s: float = 300.0, **env: str) -> str:
    """Run ``journey ARGS`` to completion and return stdout; fail showing its output."""
    return support.run_journey(*args, timeout_s=timeout_s, **env)


def open_server(url: str) -> ServerBackend:
    """Connect to the test server or fail (never skip) saying what to do."""
    return support.open_server(url, advice="Start it (make up) or set JOURNEY_TEST_CLICKHOUSE_URL.")


def fresh_server_url(prefix: str) -> str:
    """The test server's URL with a unique, not yet existing database named ``prefix_<hex>``."""
    return database_url(f"{prefix}_{uuid.uuid4().hex[:12]}")
