"""Helpers shared by the dashboard tests: the journey CLI, a clean environment, the server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from streams.clickhouse.server import ServerBackend
from streams.errors import StorageError

SERVER_URL = os.environ.get("JOURNEY_TEST_CLICKHOUSE_URL", "clickhouse://127.0.0.1:9000/default")
JOURNEY = Path(sys.executable).parent / "journey"


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without JOURNEY_* settings (JOURNEY_TEST_* kept)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("JOURNEY_") or k.startswith("JOURNEY_TEST_")
    }
    env.update(overrides)
    return env


def run_journey(*args: str, timeout_s: float = 300.0, **env: str) -> str:
    """Run ``journey ARGS`` to completion and return stdout; fail showing its output."""
    if not JOURNEY.exists():
        pytest.fail(f"{JOURNEY} is missing: install the project (make venv) first")
    proc = subprocess.run(
        [str(JOURNEY), *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"journey {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
        )
    return proc.stdout


def open_server(url: str) -> ServerBackend:
    """Connect to the test server or fail (never skip) saying what to do."""
    try:
        return ServerBackend(url)
    except StorageError as exc:
        pytest.fail(
            f"ClickHouse server for integration tests is not reachable at {url}: {exc}. "
            "Start it (make up) or set JOURNEY_TEST_CLICKHOUSE_URL."
        )


def fresh_server_url(prefix: str) -> str:
    """SERVER_URL with a unique, not yet existing database named ``prefix_<hex>``."""
    return f"{SERVER_URL.rsplit('/', 1)[0]}/{prefix}_{uuid.uuid4().hex[:12]}"
