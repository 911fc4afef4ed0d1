"""The topics, consumer groups, databases and folders one bench run creates, and their removal.

Every name carries the run's random tag (``jb-<tag>-...`` topics and groups, ``jb_<tag>_...``
databases), so cleanup deletes by prefix: the worker's and Faust's internal topics, whose
exact names the bench does not choose, go too.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.clickhouse.address import ServerAddress, server_address
from streams.clickhouse.server import ServerBackend
from streams.errors import StorageError
from streams.kafka_connection import KafkaConnection, check_connection, client_config
from streams.settings import Settings

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

from streams.bench.processes import BenchError, stop_all


@dataclass
class BenchResources:
    """Names and cleanup of one run; use as a context manager so cleanup always happens.

    ``settings`` holds how every client of the run connects to Kafka and ClickHouse: the
    bench's own (admin, producers, raw consumer, built by ``client_config``; the server
    connections of :meth:`address`) and those of the processes it starts (given
    :meth:`connection_environment`).
    """

    settings: Settings
    clickhouse_base: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="journey-bench-")))
    keep_workdir: bool = False
    #: Workers take their input without the by-visitor hop (the bench keys by visitor).
    direct: bool = True
    _databases: set[str] = field(default_factory=set)

    def __enter__(self) -> BenchResources:
        """Check that Kafka answers, as the clients will connect, before anything is created.

        A refused login, a certificate that does not verify or a protocol the listener does
        not speak fails here in one line naming the setting (``check_connection``).
        """
        try:
            check_connection(self.connection)
            self._admin().close()
        except BaseException:
            # __exit__ does not run when __enter__ fails: the work folder goes here.
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        return self

    @property
    def brokers(self) -> str:
        """The bootstrap servers, as given (for messages)."""
        return self.settings.brokers

    @functools.cached_property
    def connection(self) -> KafkaConnection:
        """How the bench's own clients connect (the password file is read once, here)."""
        return KafkaConnection.from_settings(self.settings)

    def connection_environment(self) -> dict[str, str]:
        """The ``JOURNEY_*`` variables that connect a process the bench starts like the bench."""
        return self.settings.connection_environment()

    def __exit__(self, *exc: object) -> None:
        """Delete everything the run created (best effort, each step on its own)."""
        self.cleanup()

    def _admin(self) -> Any:
        try:
            return KafkaAdminClient(
                **client_config(self.connection, "kafka-python"),
                client_id=f"jb-{self.tag}-admin",
                request_timeout_ms=30_000,
            )
        except KafkaError as exc:
            raise BenchError(
                f"Kafka is not reachable at {self.brokers} ({exc}); start the stack (make up) "
                "or pass --brokers"
            ) from exc

    def name(self, label: str) -> str:
        """A topic / app id / consumer group name unique to this run."""
        return f"jb-{self.tag}-{label}"

    def create_topic(self, label: str, partitions: int) -> str:
        """Create the topic ``jb-<tag>-<label>`` and return its name."""
        name = self.name(label)
        admin = self._admin()
        try:
            admin.create_topics([NewTopic(name, partitions, 1)], timeout_ms=30_000)
        finally:
            admin.close()
        return name

    def database_url(self, label: str) -> str:
        """A fresh database URL on the server (dropped by :meth:`cleanup`)."""
        database = f"jb_{self.tag}_{label}"
        self._databases.add(database)
        return f"{self.clickhouse_base.rstrip('/')}/{database}"

    def address(self, url: str) -> ServerAddress:
        """The server ``url`` names, with the run's ClickHouse password file and TLS settings."""
        return server_address(url, self.settings)

    def folder(self, label: str) -> Path:
        """A fresh folder under the run's work directory."""
        path = self.workdir / label
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cleanup(self) -> None:
        """Stop its processes, drop its databases, delete its topics and groups and folder."""
        stop_all()
        for database in sorted(self._databases):
            with contextlib.suppress(StorageError):
                backend = ServerBackend(
                    self.address(f"{self.clickhouse_base.rstrip('/')}/{database}")
                )
                try:
                    backend.drop_database()
                finally:
                    backend.close()
        with contextlib.suppress(KafkaError, BenchError):
            admin = self._admin()
            try:
                prefix = f"jb-{self.tag}-"
                topics = [t for t in admin.list_topics() if t.startswith(prefix)]
                if topics:
                    with contextlib.suppress(KafkaError):
                        admin.delete_topics(topics, timeout_ms=30_000)
                groups = [
                    g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(prefix)
                ]
                self._delete_groups(admin, groups)
            finally:
                admin.close()
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @staticmethod
    def _delete_groups(admin: Any, groups: list[str], timeout_s: float = 30.0) -> None:
        """Delete consumer groups, retrying those that still have a member (bounded).

        A process stopped with SIGKILL stays a member until its session times out, and a
        group with members cannot be deleted; after the bound, such a group is left.
        """
        deadline = time.monotonic() + timeout_s
        while groups:
            try:
                errors = admin.delete_groups(groups) or {}
            except KafkaError:
                return
            groups = [g for g, error in errors.items() if error and "NonEmpty" in str(error)]
            if not groups or time.monotonic() >= deadline:
                return
            time.sleep(1.0)
