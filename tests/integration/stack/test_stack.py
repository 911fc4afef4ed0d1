"""The local stack scripts: up twice, status, down, and a clear failure on a taken port.

These tests start a second, private copy of the stack on other ports and in a temporary
folder, so the services the rest of the suite uses keep running.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
STACK = ROOT / "deploy" / "stack.sh"

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def stack_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a private stack on free ports; always brought down afterwards."""
    env = dict(os.environ)
    env.update(
        STACK_DIR=str(tmp_path / "stack"),
        PYTHON=sys.executable,
        KAFKA_PORT=str(_free_port()),
        KAFKA_CONTROLLER_PORT=str(_free_port()),
        CLICKHOUSE_TCP_PORT=str(_free_port()),
        CLICKHOUSE_HTTP_PORT=str(_free_port()),
        PROMETHEUS_PORT=str(_free_port()),
        ALERTMANAGER_PORT=str(_free_port()),
        # The SASL_SSL listener too: certificates, SCRAM user and its health check.
        KAFKA_SECURE="1",
        KAFKA_SASL_SSL_PORT=str(_free_port()),
        # ClickHouse's TLS port and password user too: certificates, users.d, health check.
        CLICKHOUSE_SECURE="1",
        CLICKHOUSE_TCP_SECURE_PORT=str(_free_port()),
        STACK_WAIT_S="120",
    )
    yield env
    subprocess.run([str(STACK), "down"], env=env, timeout=120, check=False)


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STACK), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _ports(env: dict[str, str]) -> list[int]:
    names = (
        "KAFKA_PORT",
        "KAFKA_CONTROLLER_PORT",
        "KAFKA_SASL_SSL_PORT",
        "CLICKHOUSE_TCP_PORT",
        "CLICKHOUSE_HTTP_PORT",
        "CLICKHOUSE_TCP_SECURE_PORT",
        "PROMETHEUS_PORT",
        "ALERTMANAGER_PORT",
    )
    return [int(env[name]) for name in names]


def _processes_under(folder: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if folder in line and "ps -eo" not in line]


@pytest.mark.slow
def test_up_twice_status_down_leaves_nothing_running(stack_env: dict[str, str]) -> None:
    """`up` starts all four services healthy, a second `up` is a no-op, `down` stops them all."""
    first = _run(stack_env, "up")
    assert first.returncode == 0, first.stdout + first.stderr
    for name in ("kafka", "clickhouse", "prometheus", "alertmanager"):
        assert f"{name} is healthy" in first.stdout
    assert "kafka SASL_SSL listener is healthy" in first.stdout
    assert "clickhouse TLS port is healthy" in first.stdout
    assert all(_listening(port) for port in _ports(stack_env))

    second = _run(stack_env, "up")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("already running") == 4

    status = _run(stack_env, "status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.count("healthy") == 4
    assert status.stdout.splitlines()[-1] == "stack: up"

    down = _run(stack_env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(_listening(port) for port in _ports(stack_env))
    assert _processes_under(stack_env["STACK_DIR"]) == []

    after = _run(stack_env, "status")
    assert after.returncode == 0, after.stdout
    assert [line.split()[1] for line in after.stdout.splitlines()[:4]] == ["down"] * 4
    assert after.stdout.splitlines()[-1] == "stack: down (start it with: make up)"


def test_taken_port_fails_naming_the_service(stack_env: dict[str, str]) -> None:
    """A port held by another process makes `up` fail with the service and port named."""
    stack_env["STACK_SERVICES"] = "clickhouse"
    port = int(stack_env["CLICKHOUSE_TCP_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = _run(stack_env, "up")
    assert result.returncode != 0
    assert f"clickhouse cannot start: 127.0.0.1:{port} is already taken" in result.stderr
    assert _processes_under(stack_env["STACK_DIR"]) == []
