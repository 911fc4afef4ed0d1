"""Fixtures of the worker tests; the helpers they use live in ``workerkit``.

Every test talks to the real Kafka broker and ClickHouse server (``JOURNEY_TEST_BROKERS``,
``JOURNEY_TEST_CLICKHOUSE_URL``) and fails, never skips, when they are down. Every
process or thread a fixture hands out is stopped in its teardown, whatever the test did.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from workerkit import (
    STACK,
    Names,
    PacedProducer,
    PrivateClickHouse,
    WorkerProcess,
    free_port,
    fresh_names,
    worker_env,
)


@pytest.fixture
def paced_producers() -> Iterator[list[PacedProducer]]:
    """Register PacedProducers here; every one is stopped after the test."""
    started: list[PacedProducer] = []
    yield started
    for producer in started:
        producer.stop()


@pytest.fixture
def names(request: pytest.FixtureRequest) -> Iterator[Names]:
    """Unique names for this test; input topic with 4 partitions unless parametrized."""
    partitions = getattr(request, "param", 4)
    with fresh_names(request.node.name.split("[")[0].removeprefix("test_")[:20], partitions) as n:
        yield n


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory of WorkerProcess objects; every one is stopped after the test, whatever happens.

    ``workers(names, name="a", **settings)``: its own data dir and metrics port (kept across
    restarts of the same object), log in tmp_path/worker-NAME.log.
    """
    made: list[WorkerProcess] = []

    def make(names: Names, name: str = "a", **settings: str | float | int) -> WorkerProcess:
        data_dir = tmp_path / f"worker-{name}"
        data_dir.mkdir(exist_ok=True)
        port = free_port()
        worker = WorkerProcess(
            env=worker_env(names, data_dir, port, **settings),
            log_path=tmp_path / f"worker-{name}.log",
            metrics_port=port,
        )
        made.append(worker)
        return worker

    try:
        yield make
    finally:
        for worker in made:
            worker.stop()


@pytest.fixture
def private_clickhouse(tmp_path: Path) -> Iterator[PrivateClickHouse]:
    """A running private ClickHouse server; always stopped after the test."""
    server = PrivateClickHouse(tmp_path / "stack", free_port(), free_port())
    server.up()
    try:
        yield server
    finally:
        subprocess.run(
            [str(STACK), "down"], env=server.env, capture_output=True, timeout=120, check=False
        )
