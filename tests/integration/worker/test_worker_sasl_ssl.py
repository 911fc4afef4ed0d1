"""The worker end to end over the broker's SASL_SSL listener: its figures equal replay.

Every Kafka client of the worker (the Faust app, the intake consumer, the output producer,
topic administration) reaches the broker only through the listener that
``KAFKA_SECURE=1 deploy/stack.sh up`` adds (TLS with the stack's CA, a SCRAM-SHA-512
user), and so does ``journey generate``; a test fails, never skips, when it is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import run_journey, secure_kafka_env
from workerkit import (
    START,
    Names,
    WorkerProcess,
    assert_same_as_replay,
    free_port,
    prepare_run,
    total,
    wait_complete,
    worker_env,
)

EVENTS = 4_000
SEED = 13


@pytest.mark.integration
@pytest.mark.slow
def test_worker_over_sasl_ssl_equals_replay(tmp_path: Path, names: Names) -> None:
    """Generated over SASL_SSL, processed by a worker connected over SASL_SSL: same as replay."""
    secure = secure_kafka_env()
    run = prepare_run(tmp_path, names, EVENTS, SEED)
    run_journey(
        "generate", "--events", str(EVENTS), "--seed", str(SEED), "--start", START,
        "--topic", names.topic, **secure,
    )  # fmt: skip
    data_dir = tmp_path / "worker"
    data_dir.mkdir()
    port = free_port()
    # The secure settings last: JOURNEY_BROKERS is the SASL_SSL listener, not the plaintext one.
    env = worker_env(names, data_dir, port) | secure
    worker = WorkerProcess(env, tmp_path / "worker.log", port)
    try:
        worker.start()
        worker.wait_ready()
        wait_complete([worker], names.url, run.expected_events, timeout_s=120)
        assert_same_as_replay(names)
        # Every generated message was read through the secured intake.
        assert total(worker.metrics(), "journey_events_total") == len(run.lines)
    finally:
        worker.stop()
