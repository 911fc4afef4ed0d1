"""``journey bench`` over secured Kafka and ClickHouse: every client it makes connects.

The bench's topic administration, bulk producer, raw consumer, the naive Faust agent and
the worker it starts all reach Kafka through the SASL_SSL listener that
``KAFKA_SECURE=1 deploy/stack.sh up`` adds (SCRAM user, the stack's CA), and the ClickHouse
server through the TLS port and password user that ``CLICKHOUSE_SECURE=1`` adds (password
file, CA file), with the ``JOURNEY_*`` settings in the bench's environment and none on its
command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import (
    CLICKHOUSE_URL,
    clean_env,
    kafka_admin,
    secure_clickhouse_env,
    secure_kafka_env,
)

from streams.clickhouse.server import ServerBackend

pytestmark = pytest.mark.integration

#: Small enough for well under a minute on a shared 2-core machine, large enough that the
#: worker closes sessions and writes them.
EVENTS = 2000


def test_bench_runs_its_phases_over_sasl_ssl_and_clickhouse_tls(tmp_path: Path) -> None:
    """The raw consumer and the naive agent read every event sent and the worker stores every
    one, over SASL_SSL, into the ClickHouse server over TLS with the password user."""
    secure = secure_kafka_env() | secure_clickhouse_env()
    env = clean_env(**secure) | {"TMPDIR": str(tmp_path)}  # the bench's work folder lands here
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench",
         "--events", str(EVENTS), "--partitions", "2", "--flush-interval", "1",
         "--phase-timeout", "90", "--skip", "replay,latency,memory", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    result = json.loads(proc.stdout)
    assert result["errors"] == {}
    assert result["produced_events"] == EVENTS
    assert result["raw"]["events"] == EVENTS
    assert result["naive"]["events"] == EVENTS
    assert result["naive"]["complete"] is True
    # The worker phase ends only once ClickHouse shows every accepted event in a session.
    assert result["worker"]["events"] + result["worker"]["duplicates"] == EVENTS
    assert result["worker"]["late"] == 0
    assert result["events_per_s"] > 0
    # The versions were read over TLS too (the server answers its own version).
    assert result["versions"]["clickhouse_server"], result["versions"]
    # Nothing was created on the plaintext side either, and nothing the run made is left.
    admin = kafka_admin()
    try:
        left = [t for t in admin.list_topics() if t.startswith(f"jb-{result['run_tag']}-")]
    finally:
        admin.close()
    assert left == []
    server = ServerBackend(CLICKHOUSE_URL)  # the plaintext port of the same server
    try:
        databases = [row[0] for row in server.query("SHOW DATABASES")]
    finally:
        server.close()
    assert not [d for d in databases if d.startswith(f"jb_{result['run_tag']}_")], databases
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("journey-bench-")]


def test_bench_with_a_wrong_password_fails_in_one_line(tmp_path: Path) -> None:
    """A refused SCRAM login stops the bench before it creates anything, naming the setting."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    env = clean_env(**(secure_kafka_env() | {"JOURNEY_KAFKA_SASL_PASSWORD_FILE": str(wrong)}))
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "bench", "--events", "10",
         "--clickhouse", CLICKHOUSE_URL, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("journey bench: error: "), lines[0]
    assert "JOURNEY_KAFKA_SASL_PASSWORD_FILE" in lines[0]
    assert os.listdir(tmp_path) == ["wrong-password"]  # no work folder was made
