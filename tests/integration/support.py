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
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.bench.processes import BenchError, wait_for
from streams.bench.processes import free_port as free_port  # re-exported for the kits
from streams.clickhouse.server import ServerBackend
from streams.errors import StorageError

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, UnknownTopicOrPartitionError

BROKERS = os.environ.get("JOURNEY_TEST_BROKERS", "127.0.0.1:9092")
CLICKHOUSE_URL = os.environ.get(
    "JOURNEY_TEST_CLICKHOUSE_URL", "clickhouse://127.0.0.1:9000/default"
)
ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "stack.sh"
JOURNEY = Path(sys.executable).parent / "journey"
#: The JOURNEY_* settings of a client of the broker's SASL_SSL listener, written by
#: ``KAFKA_SECURE=1 deploy/stack.sh up`` (``make test`` sets it) into the stack folder.
SECURE_KAFKA_ENV = Path(
    os.environ.get(
        "JOURNEY_TEST_KAFKA_SECURE_ENV", ROOT / ".stack" / "kafka" / "secure" / "journey.env"
    )
)
#: The JOURNEY_* settings of a client of the ClickHouse server's TLS port (password user,
#: CA file), written by ``CLICKHOUSE_SECURE=1 deploy/stack.sh up`` (``make test`` sets it).
SECURE_CLICKHOUSE_ENV = Path(
    os.environ.get(
        "JOURNEY_TEST_CLICKHOUSE_SECURE_ENV",
        ROOT / ".stack" / "clickhouse" / "secure" / "journey.env",
    )
)
#: What a failure to reach the ClickHouse server tells the reader to do.
START_CLICKHOUSE = (
    "Start it with `make up` (deploy/stack.sh up) or set JOURNEY_TEST_CLICKHOUSE_URL."
)


# ---------------------------------------------------------------- processes and polling


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
    try:
        return wait_for(check, timeout_s=timeout_s, interval_s=interval_s, what=what)
    except BenchError as timed_out:  # "timed out after N s waiting for WHAT"
        pytest.fail(f"{timed_out}.{separator}{describe()}")


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


def secure_kafka_env() -> dict[str, str]:
    """The settings of a SASL_SSL client of the test broker, or a failure saying how to start it.

    Read from :data:`SECURE_KAFKA_ENV` (``JOURNEY_*=value`` lines): the listener's address,
    SCRAM-SHA-512 user, password file and CA file.
    """
    if not SECURE_KAFKA_ENV.is_file():
        pytest.fail(
            f"{SECURE_KAFKA_ENV} is missing: the broker has no SASL_SSL listener. Start it with "
            "`KAFKA_SECURE=1 deploy/stack.sh up` (make test does), or point "
            "JOURNEY_TEST_KAFKA_SECURE_ENV at the journey.env of your stack folder"
        )
    lines = SECURE_KAFKA_ENV.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def kafka_jars() -> Path:
    """The folder of the broker jars of the running stack (beside its SASL_SSL material).

    For tests that run a broker of their own with the stack's Kafka build.
    """
    lib = SECURE_KAFKA_ENV.parents[1] / "lib"
    if not any(lib.glob("kafka-server-*.jar")):
        pytest.fail(
            f"no Kafka broker jars in {lib}: start the stack with `KAFKA_SECURE=1 "
            "deploy/stack.sh up` (make test does), or point JOURNEY_TEST_KAFKA_SECURE_ENV at "
            "the journey.env of your stack folder"
        )
    return lib


def topic_reader(topic: str, committed: bool = False) -> KafkaConsumer:
    """A group-less consumer of every partition of ``topic`` from its first message.

    ``committed``: read with ``isolation_level=read_committed`` (records of committed
    transactions only, as consumers of the worker's exactly-once output do). The caller
    closes it.
    """
    return KafkaConsumer(
        topic,
        bootstrap_servers=BROKERS,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed" if committed else "read_uncommitted",
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


def secure_clickhouse_env() -> dict[str, str]:
    """The settings of a TLS client of the test server, or a failure saying how to start it.

    Read from :data:`SECURE_CLICKHOUSE_ENV` (``JOURNEY_*=value`` lines): the
    ``clickhouses://`` URL with the user, the password file and the CA file.
    """
    if not SECURE_CLICKHOUSE_ENV.is_file():
        pytest.fail(
            f"{SECURE_CLICKHOUSE_ENV} is missing: the ClickHouse server has no TLS port. Start "
            "it with `CLICKHOUSE_SECURE=1 deploy/stack.sh up` (make test does), or point "
            "JOURNEY_TEST_CLICKHOUSE_SECURE_ENV at the journey.env of your stack folder"
        )
    lines = SECURE_CLICKHOUSE_ENV.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


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


# ---------------------------------------------------------------- a worker process


@dataclass
class WorkerProcess:
    """One ``journey worker`` subprocess: start, SIGKILL, SIGTERM, metrics, RSS, log.

    ``args`` go after ``journey worker --loglevel info`` (``--processes 2``).
    """

    env: dict[str, str]
    log_path: Path
    metrics_port: int
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: Any = field(default=None, repr=False)

    def start(self) -> WorkerProcess:
        """Start the worker (its own process group); the log is appended to ``log_path``."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        journey = journey_executable()
        self._close_log()
        self._log = self.log_path.open("ab")
        self.starts += 1
        self._log.write(f"\n===== start #{self.starts} =====\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            [str(journey), "worker", "--loglevel", "info", *self.args],
            env=clean_env(**self.env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        """Process id of the running worker."""
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """True while the current process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the worker (a crash: nothing is flushed or committed) and reap it."""
        if self.alive:
            assert self.proc is not None
            kill_process_group(self.proc)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout_s``."""
        if self.alive:
            assert self.proc is not None
            stop_process_group(self.proc, timeout_s)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the worker log (for failure messages)."""
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        """Every sample of the /metrics endpoint, or None when it does not answer."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
            ) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics; fails when the endpoint does not answer."""
        samples = self.scrape()
        if samples is None:
            pytest.fail(
                f"worker /metrics on port {self.metrics_port} does not answer "
                f"(alive: {self.alive})\n{self.log_tail()}"
            )
        return samples

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until /metrics answers (settings valid, ClickHouse migrated, Faust starting)."""

        def ready() -> bool:
            self.assert_alive("while starting")
            return self.scrape() is not None

        poll(ready, timeout_s=timeout_s, what="the worker's /metrics endpoint",
             describe=self.log_tail)  # fmt: skip

    def assert_alive(self, when: str) -> None:
        """Fail with the log when the worker has exited."""
        if not self.alive:
            code = self.proc.returncode if self.proc is not None else None
            pytest.fail(f"the worker exited ({code}) {when}:\n{self.log_tail(60)}")

    def rss_bytes(self) -> int:
        """Resident set size of the worker (VmRSS from /proc)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS in /proc/{self.pid}/status")
