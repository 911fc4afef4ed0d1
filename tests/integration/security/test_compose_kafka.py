"""docker-compose.yml's Kafka security, run for real: a broker with its listener settings.

No Docker here, so the test plays the images' part: it turns the kafka service's
``KAFKA_*`` variables into server.properties by the apache/kafka image's documented naming
(``compose_support.kafka_properties``), moves the ports to free local ones and every host
to 127.0.0.1, and starts a KRaft broker with the stack's Kafka build. Then, as the compose
file does: the kafka-users command writes the SCRAM user through the broker's loopback
listener, and ``journey generate`` and ``journey worker`` run with the worker service's
``JOURNEY_KAFKA_*`` settings, until every event is in ClickHouse.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shlex
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support import (
    CLICKHOUSE_URL,
    ROOT,
    clean_env,
    free_port,
    journey_executable,
    kafka_jars,
    poll,
    stop_process_group,
)

from streams.clickhouse.server import ServerBackend
from streams.errors import StorageError

pytestmark = pytest.mark.integration

EVENTS = 300


def compose_support() -> ModuleType:
    """tests/unit/deploy/compose_support.py: the unit tests' reading of the compose file."""
    path = ROOT / "tests" / "unit" / "deploy" / "compose_support.py"
    spec = importlib.util.spec_from_file_location("compose_support", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def listening(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LocalBroker:
    """The compose file's broker settings on free local ports, run from the stack's jars."""

    def __init__(self, properties: dict[str, str], folder: Path) -> None:
        """Move every listener port to a free one and every host to 127.0.0.1."""
        self.ports: dict[int, int] = {}
        self.folder = folder
        moved = dict(properties)
        for key in ("listeners", "advertised.listeners", "controller.quorum.voters"):
            moved[key] = re.sub(r"(//|@)[^:,/@]*:(\d+)", self._move, properties[key])
        moved["log.dirs"] = str(folder / "data")
        self.config = folder / "server.properties"
        self.config.write_text("".join(f"{k}={v}\n" for k, v in moved.items()))
        self.java = [
            "java", "-Xmx256m", "-Xms128m", f"-Dkafka.logs.dir={folder}",
            f"-Dlog4j2.configurationFile={ROOT / 'deploy' / 'kafka' / 'log4j2.properties'}",
            "-cp", f"{kafka_jars()}/*",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def _move(self, match: re.Match[str]) -> str:
        port = int(match.group(2))
        self.ports.setdefault(port, free_port())
        return f"{match.group(1)}127.0.0.1:{self.ports[port]}"

    def address(self, compose_port: int) -> str:
        """Where the listener the compose file puts on ``compose_port`` is here."""
        return f"127.0.0.1:{self.ports[compose_port]}"

    def run_tool(self, main_class: str, *args: str) -> str:
        """A Kafka command-line tool's output; a failure shows it."""
        proc = subprocess.run(
            [*self.java, main_class, *args], capture_output=True, text=True, timeout=90, check=False
        )
        assert proc.returncode == 0, f"{main_class} {args}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def start(self) -> None:
        """Format the storage and start the broker; wait until every listener accepts."""
        cluster = self.run_tool("kafka.tools.StorageTool", "random-uuid").strip().splitlines()[-1]
        self.run_tool("kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(self.config))
        with (self.folder / "broker.log").open("wb") as log:
            self.process = subprocess.Popen(
                [*self.java, "kafka.Kafka", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        poll(
            lambda: (
                self.process is not None
                and self.process.poll() is None
                and all(listening(port) for port in self.ports.values())
            ),
            timeout_s=60,
            what="the broker's listeners",
            describe=lambda: (self.folder / "broker.log").read_text(errors="replace")[-3000:],
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.process is not None:
            stop_process_group(self.process, 30)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[LocalBroker, Any]]:
    """The compose file's broker, running; with the module that read the file."""
    support = compose_support()
    properties, _ = support.broker_and_worker(support.load_compose())
    local = LocalBroker(properties, tmp_path)
    try:
        local.start()
        yield local, support
    finally:
        local.stop()


def sessions_events(url: str) -> int:
    """sum(events) of the live sessions in ``url``'s database (0 before the table exists)."""
    with contextlib.suppress(StorageError):
        backend = ServerBackend(url)
        try:
            rows = backend.query("SELECT sum(events) FROM sessions FINAL WHERE deleted = 0")
            return int(rows[0][0] or 0)
        finally:
            backend.close()
    return 0


def test_the_compose_worker_settings_work_on_the_compose_broker(
    broker: tuple[LocalBroker, Any], tmp_path: Path
) -> None:
    """kafka-users' command creates the user; generate and the worker, configured as the compose
    worker is, log in with it, and every event sent reaches ClickHouse."""
    local, support = broker
    compose = support.load_compose()
    # kafka-users: its command, aimed at the same listener here.
    _, command = support.user_creation(compose)
    words = shlex.split(command)
    assert words[0].endswith("kafka-configs.sh"), words
    bootstrap = words.index("--bootstrap-server") + 1
    words[bootstrap] = local.address(int(words[bootstrap].rpartition(":")[2]))
    out = local.run_tool("kafka.admin.ConfigCommand", *words[1:])
    assert "Completed updating config for user" in out
    # The worker service's Kafka settings, with JOURNEY_BROKERS at the moved listener.
    filled = support.filled_env()
    worker = {
        k: support.interpolate(v, filled)
        for k, v in support.service_env(compose["services"]["worker"]).items()
        if k.startswith("JOURNEY_KAFKA_")
    }
    compose_brokers = support.service_env(compose["services"]["worker"])["JOURNEY_BROKERS"]
    worker["JOURNEY_BROKERS"] = local.address(int(compose_brokers.rpartition(":")[2]))
    topic = f"compose-{uuid.uuid4().hex[:8]}"
    sent = subprocess.run(
        [str(journey_executable()), "generate", "--events", str(EVENTS), "--topic", topic],
        env=clean_env(**worker),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    counts = re.search(r"(\d+) events \((\d+) malformed\)", sent.stdout)
    assert counts, sent.stdout
    accepted = int(counts.group(1)) - int(counts.group(2))
    url = f"{CLICKHOUSE_URL.rsplit('/', 1)[0]}/compose_{uuid.uuid4().hex[:8]}"
    with (tmp_path / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [str(journey_executable()), "worker"],
            env=clean_env(
                **worker,
                JOURNEY_INPUT_TOPIC=topic,
                JOURNEY_APP_ID=topic,
                JOURNEY_CLICKHOUSE_URL=url,
                JOURNEY_DATA_DIR=str(tmp_path / "worker-data"),
                JOURNEY_METRICS_HOST="127.0.0.1",
                JOURNEY_METRICS_PORT=str(free_port()),
                JOURNEY_IDLE_GRACE_S="2",
                JOURNEY_FLUSH_INTERVAL_S="1",
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        poll(
            lambda: process.poll() is None and sessions_events(url) >= accepted,
            timeout_s=90,
            what=f"{accepted} events in ClickHouse",
            describe=lambda: (tmp_path / "worker.log").read_text(errors="replace")[-3000:],
        )
        assert sessions_events(url) == accepted
    finally:
        stop_process_group(process, 30)
        with contextlib.suppress(StorageError):
            backend = ServerBackend(url)
            try:
                backend.drop_database()
            finally:
                backend.close()
