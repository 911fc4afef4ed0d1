"""What every integration kit needs from the local stack: addresses, checks, the CLI, polling.

The services are the ones ``make up`` starts (``JOURNEY_TEST_BROKERS``,
``JOURNEY_TEST_CLICKHOUSE_URL``); a test that finds one of them down fails with what to
do, never skips. The kits (``workerkit``, ``alertkit``, ``dashboard_support``) import from
here and re-export what their tests use. This folder is on ``sys.path`` because of
``conftest.py`` next to this file (see there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from streams.clickhouse.server import ServerBackend
from streams.errors import StorageError

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, UnknownTopicOrPartitionError

BROKERS = os.environ.get("JOURNEY_TEST_BROKERS", "127.0.0.1:9092")
CLICKHOUSE_URL = os.environ.get(
    "JOURNEY_TEST_CLICKHOUSE_URL", "clickhouse://127.0.0.1:9000/default"
)
ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "stack.sh"
JOURNEY = Path(sys.executable).parent / "journey"
#: What a failure to reach the ClickHouse server tells the reader to do.
START_CLICKHOUSE = (
    "Start it with `make up` (deploy/stack.sh up) or set JOURNEY_TEST_CLICKHOUSE_URL."
)


# ---------------------------------------------------------------- processes and polling


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def poll(
    check: Callable[[], Any],
    *,
    timeout_s: float,
    interval_s: float = 0.5,
    describe: Callable[[], str] = lambda: "",
    what: str,
    separator: str = " ",
) -> Any:
    """Call ``check`` until it returns something truthy; fail after ``timeout_s``.

    Bounded twice: by the deadline and by the number of polls it allows. The failure reads
    "timed out after N s waiting for WHAT." then ``separator`` and what ``describe`` says.
    """
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / interval_s) + 2):
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            break
        time.sleep(interval_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}.{separator}{describe()}")


def kill_process_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group ``proc`` leads (started with ``start_new_session``); reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process group ``proc`` leads; SIGKILL it if still running after ``timeout_s``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_process_group(proc)


def is_journey_setting(name: str) -> bool:
    """True for a JOURNEY_* setting of the product; the tests' own JOURNEY_TEST_* are not."""
    return name.startswith("JOURNEY_") and not name.startswith("JOURNEY_TEST_")


def clean_env(**overrides: str) -> dict[str, str]:
    """This process's environment without JOURNEY_* settings (JOURNEY_TEST_* kept), + overrides."""
    env = {k: v for k, v in os.environ.items() if not is_journey_setting(k)}
    env.update(overrides)
    return env


def journey_executable() -> Path:
    """The ``journey`` command of this virtualenv, or a failure saying to install it."""
    if not JOURNEY.exists():
        pytest.fail(f"{JOURNEY} is missing: install the project (make venv) first")
    return JOURNEY


def run_journey(*args: str, timeout_s: float = 180.0, **env: str) -> str:
    """Run ``journey ARGS`` to completion; its stdout, or a failure showing its output.

    It runs in :func:`clean_env` plus ``env``.
    """
    proc = subprocess.run(
        [str(journey_executable()), *args],
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


# ---------------------------------------------------------------- Kafka


def kafka_admin() -> Any:
    """An admin client of the test broker, or a failure saying how to start it."""
    try:
        return KafkaAdminClient(
            bootstrap_servers=BROKERS,
            client_id="journey-integration-tests",  # names these connections in the broker log
            request_timeout_ms=15_000,
        )
    except KafkaError as exc:
        pytest.fail(
            f"Kafka is not reachable at {BROKERS} ({exc}); start it with `make up` "
            "(deploy/stack.sh up) or set JOURNEY_TEST_BROKERS"
        )


def create_topic(name: str, partitions: int) -> None:
    """Create ``name`` with ``partitions`` partitions before anything writes to it."""
    admin = kafka_admin()
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def delete_topics_with_prefixes(prefixes: Sequence[str]) -> None:
    """Delete every topic whose name starts with one of ``prefixes`` (best effort).

    Faust names its internal topics after the app id, so an app id under a prefix takes
    them along.
    """
    admin = kafka_admin()
    try:
        doomed = [t for t in admin.list_topics() if t.startswith(tuple(prefixes))]
        if doomed:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                admin.delete_topics(doomed)
    finally:
        admin.close()


# ---------------------------------------------------------------- ClickHouse


def open_server(url: str, advice: str = START_CLICKHOUSE) -> ServerBackend:
    """A backend on ``url`` or a failure saying how to start the server (never a skip).

    The failure names ``url`` and the driver's error, then gives ``advice``.
    """
    try:
        return ServerBackend(url)
    except StorageError as exc:
        pytest.fail(
            f"ClickHouse server for integration tests is not reachable at {url}: {exc}. {advice}"
        )


def database_url(database: str, base: str = CLICKHOUSE_URL) -> str:
    """``base`` with its database replaced."""
    return f"{base.rsplit('/', 1)[0]}/{database}"


def drop_database(url: str) -> None:
    """Drop the database of ``url`` (teardown; ignores a server that is gone)."""
    with contextlib.suppress(StorageError):
        backend = ServerBackend(url)
        try:
            backend.drop_database()
        finally:
            backend.close()
