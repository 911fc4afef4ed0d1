"""Fixtures of the alerting test; the helpers they use live in ``alertkit`` and ``support``.

The test talks to the real Kafka broker and ClickHouse server (``JOURNEY_TEST_BROKERS``,
``JOURNEY_TEST_CLICKHOUSE_URL``) and fails, never skips, when they are down. Every process
and thread a fixture hands out is stopped in its teardown, whatever the test did.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alertkit import (
    WORKER_SETTINGS,
    CompressedFeed,
    PrivateStack,
    RunNames,
    WebhookReceiver,
    WorkerProcess,
)
from support import (
    BROKERS,
    CLICKHOUSE_URL,
    clean_env,
    create_topic,
    database_url,
    delete_topics_with_prefixes,
    drop_database,
    free_port,
    open_server,
)


@pytest.fixture
def names() -> Iterator[RunNames]:
    """Fresh names; a one-partition input topic; topics and database removed afterwards.

    One partition keeps the feed in event-time order all the way to the worker, so the
    compressed clock never makes an event late.
    """
    tag = uuid.uuid4().hex[:10]
    run = RunNames(
        prefix=f"alert-{tag}",
        database_url=database_url(f"journey_alert_{tag}"),
    )
    open_server(CLICKHOUSE_URL).close()  # fail clearly before starting anything
    create_topic(run.input_topic, partitions=1)
    try:
        yield run
    finally:
        delete_topics_with_prefixes([run.prefix])
        drop_database(run.database_url)


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    """A running webhook receiver standing in for the pager and the chat."""
    receiver = WebhookReceiver(free_port()).start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[PrivateStack]:
    """Prometheus + Alertmanager of this test (started by the test); always stopped."""
    stack = PrivateStack(tmp_path / "monitoring")
    stack.folder.mkdir()
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture
def feeds() -> Iterator[list[CompressedFeed]]:
    """Register feeds here; every one is stopped after the test."""
    started: list[CompressedFeed] = []
    try:
        yield started
    finally:
        for feed in started:
            feed.stop()


@pytest.fixture
def worker(names: RunNames, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A configured (not yet started) worker on a free metrics port; always stopped."""
    env = clean_env()
    port = free_port()
    env.update({f"JOURNEY_{name}": value for name, value in WORKER_SETTINGS.items()})
    env.update(
        JOURNEY_BROKERS=BROKERS,
        JOURNEY_INPUT_TOPIC=names.input_topic,
        JOURNEY_APP_ID=f"{names.prefix}-app",
        JOURNEY_SESSIONS_TOPIC=f"{names.prefix}-sessions",
        JOURNEY_TRANSITIONS_TOPIC=f"{names.prefix}-transitions",
        JOURNEY_DLQ_TOPIC=f"{names.prefix}-dlq",
        JOURNEY_LATE_TOPIC=f"{names.prefix}-late",
        JOURNEY_CLICKHOUSE_URL=names.database_url,
        JOURNEY_DATA_DIR=str(tmp_path / "worker"),
        JOURNEY_METRICS_PORT=str(port),
    )
    process = WorkerProcess(env, tmp_path / "worker.log", port)
    try:
        yield process
    finally:
        process.stop()
