"""Helpers of the worker tests: unique names, worker processes, generated input, references.

Every test talks to the real Kafka broker and ClickHouse server (``JOURNEY_TEST_BROKERS``,
``JOURNEY_TEST_CLICKHOUSE_URL``) and fails, never skips, when they are down. Expected
figures always come from ``journey replay`` of the same generated events (the in-memory
``sessionize_all`` path) into another database, or from hand computation; never from the
worker's own output. Every process a test starts is stopped in teardown, every loop is
bounded in polls and in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import (
    BROKERS,
    CLICKHOUSE_URL,
    STACK,
    create_topic,
    database_url,
    delete_topics_with_prefixes,
    drop_database,
    kafka_admin,
    open_server,
    poll,
    run_journey,
    topic_reader,
)
from support import WorkerProcess as WorkerProcess  # re-exported: the tests import it from here
from support import free_port as free_port  # re-exported: the tests import it from here

from streams.clickhouse.server import ServerBackend

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer

#: Event time of every generated run: fixed and in the past, so that once the input is idle
#: for JOURNEY_IDLE_GRACE_S the wall-clock watermark closes every session.
START = "2026-11-20T10:00:00Z"
MIB = 1024 * 1024


# ---------------------------------------------------------------- Kafka


def visitor_key(line: bytes) -> bytes | None:
    """The key the generator uses for a message: anonymous_id, else user_id; None if bad."""
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    key = obj.get("anonymous_id") or obj.get("user_id")
    return key.encode() if isinstance(key, str) and key else None


def produce(topic: str, lines: Sequence[bytes]) -> None:
    """Send ``lines`` to ``topic`` in order, keyed by visitor, and wait for delivery."""
    producer = KafkaProducer(bootstrap_servers=BROKERS, acks=1, linger_ms=10)
    try:
        futures = [producer.send(topic, key=visitor_key(v), value=v) for v in lines]
        producer.flush(timeout=60)
        for fut in futures:
            fut.get(timeout=30)
    finally:
        producer.close(timeout=10)


class PacedProducer(threading.Thread):
    """Sends lines to a topic at a fixed rate in a background thread (live-looking input)."""

    def __init__(self, topic: str, lines: Sequence[bytes], rate: float) -> None:
        super().__init__(name=f"paced-producer-{topic}", daemon=True)
        self.topic = topic
        self.lines = list(lines)
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        """Send every line, one every 1/rate seconds (in small bursts), until stopped."""
        try:
            producer = KafkaProducer(bootstrap_servers=BROKERS, acks=1, linger_ms=20)
            try:
                began = time.monotonic()
                for index, line in enumerate(self.lines):
                    if self._stop_event.is_set():
                        return
                    ahead = began + index / self.rate - time.monotonic()
                    if ahead > 0.01:
                        self._stop_event.wait(ahead)
                    producer.send(self.topic, key=visitor_key(line), value=line)
                    self.sent += 1
                producer.flush(timeout=60)
            finally:
                producer.close(timeout=10)
        except BaseException as exc:  # reported by finish(), in the test's thread
            self.error = exc

    def finish(self, timeout_s: float) -> None:
        """Wait until every line was sent; fail if that takes longer or sending failed."""
        self.join(timeout_s)
        if self.is_alive():
            self.stop()
            pytest.fail(f"paced producer did not finish within {timeout_s:.0f} s")
        if self.error is not None:
            raise AssertionError(f"paced producer failed: {self.error!r}") from self.error
        assert self.sent == len(self.lines)

    def stop(self) -> None:
        """Stop sending and wait for the thread (teardown)."""
        self._stop_event.set()
        self.join(30)


def read_topic(
    topic: str, expected: int, timeout_s: float = 30.0, committed: bool = False
) -> list[tuple[Any, Any]]:
    """(key, value) of every message in ``topic``: until ``expected`` arrived, then 2 s more.

    ``committed``: only records of committed transactions (``topic_reader``).
    """
    consumer = topic_reader(topic, committed)
    messages: list[tuple[Any, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(messages) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                messages.extend((r.key, r.value) for r in records)
        # A little longer: anything beyond the expected count would be an extra message.
        extra_until = time.monotonic() + 2.0
        while time.monotonic() < extra_until:
            for records in consumer.poll(timeout_ms=500).values():
                messages.extend((r.key, r.value) for r in records)
    finally:
        consumer.close()
    return messages


# ---------------------------------------------------------------- ClickHouse


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows of one SELECT on ``url``."""
    backend = open_server(url)
    try:
        return backend.query(sql)
    finally:
        backend.close()


def progress(url: str) -> tuple[int, int, int]:
    """(sessions, sum of events, open sessions) of the live session rows at ``url``."""
    backend = ServerBackend(url)
    try:
        tables = {row[0] for row in backend.query("SHOW TABLES")}
        if "sessions" not in tables:
            return (0, 0, 0)
        row = backend.query(
            "SELECT count(), sum(events), sum(closed = 0) FROM sessions FINAL WHERE deleted = 0"
        )[0]
    finally:
        backend.close()
    return (int(row[0]), int(row[1]), int(row[2]))


def table_rows(url: str, table: str, key: str) -> list[tuple[Any, ...]]:
    """Every live row of ``table`` (FINAL, deleted = 0), all columns but version, by ``key``."""
    columns = [row[0] for row in query(url, f"DESCRIBE TABLE {table}") if row[0] != "version"]
    return query(
        url,
        f"SELECT {', '.join(columns)} FROM {table} FINAL WHERE deleted = 0 ORDER BY {key}",
    )


def summary(url: str) -> dict[str, Any]:
    """``journey summary --clickhouse URL --json`` parsed."""
    out = run_journey("summary", "--clickhouse", url, "--json")
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def describe_difference(
    worker: Sequence[tuple[Any, ...]], reference: Sequence[tuple[Any, ...]]
) -> str:
    """A short account of how two row lists (sorted by their first column) differ."""
    mine = {row[0]: row for row in worker}
    theirs = {row[0]: row for row in reference}
    only_worker = sorted(set(mine) - set(theirs))
    only_reference = sorted(set(theirs) - set(mine))
    changed = [k for k in sorted(set(mine) & set(theirs)) if mine[k] != theirs[k]]
    lines = [
        f"worker {len(worker)} rows, replay {len(reference)} rows; "
        f"{len(only_worker)} only in worker, {len(only_reference)} only in replay, "
        f"{len(changed)} differ"
    ]
    lines += [f"  only worker: {mine[k]}" for k in only_worker[:3]]
    lines += [f"  only replay: {theirs[k]}" for k in only_reference[:3]]
    for k in changed[:3]:
        lines.append(f"  worker: {mine[k]}\n  replay: {theirs[k]}")
    return "\n".join(lines)


# ---------------------------------------------------------------- per-test names


@dataclass
class Names:
    """Unique Kafka topics, app id and databases of one test."""

    tag: str
    topic: str
    app_id: str
    database: str
    reference_database: str
    dlq_topic: str
    late_topic: str
    sessions_topic: str
    transitions_topic: str
    clickhouse_base: str = CLICKHOUSE_URL

    @classmethod
    def fresh(cls, label: str) -> Names:
        """New names, all containing a random tag."""
        tag = f"{label}-{uuid.uuid4().hex[:10]}"
        db = tag.replace("-", "_")
        return cls(
            tag=tag,
            topic=f"wt-{tag}-in",
            app_id=f"wt-{tag}-app",
            database=f"jw_{db}",
            reference_database=f"jw_{db}_ref",
            dlq_topic=f"wt-{tag}-dlq",
            late_topic=f"wt-{tag}-late",
            sessions_topic=f"wt-{tag}-sessions",
            transitions_topic=f"wt-{tag}-transitions",
        )

    @property
    def url(self) -> str:
        """ClickHouse URL of the worker's database."""
        return database_url(self.database, self.clickhouse_base)

    @property
    def reference_url(self) -> str:
        """ClickHouse URL of the replay reference database (always on the shared server)."""
        return database_url(self.reference_database)

    def cleanup(self) -> None:
        """Delete the test's topics (Faust's internal ones too) and its databases.

        ``JOURNEY_TEST_KEEP_DATA=1`` keeps them, to inspect a failed run.
        """
        if os.environ.get("JOURNEY_TEST_KEEP_DATA") == "1":
            return
        delete_topics_with_prefixes([f"wt-{self.tag}-"])
        drop_database(self.url)
        drop_database(self.reference_url)


@contextlib.contextmanager
def fresh_names(label: str, input_partitions: int) -> Iterator[Names]:
    """Names for one run, with the input topic created; everything removed afterwards."""
    admin = kafka_admin()  # fails clearly when Kafka is down
    admin.close()
    open_server(CLICKHOUSE_URL).close()  # and when ClickHouse is down
    names = Names.fresh(label)
    create_topic(names.topic, input_partitions)
    try:
        yield names
    finally:
        names.cleanup()


# ---------------------------------------------------------------- generated input


@dataclass
class GeneratedRun:
    """One generated event set: the JSONL file, and the reference figures from replay."""

    path: Path
    lines: list[bytes]
    replay_report: str
    expected_events: int


def generate_file(path: Path, events: int, seed: int, *extra: str) -> list[bytes]:
    """``journey generate --out`` with the fixed start; the lines written."""
    run_journey(
        "generate", "--events", str(events), "--seed", str(seed), "--start", START,
        "--out", str(path), *extra,
    )  # fmt: skip
    return path.read_bytes().splitlines()


def generate_to_kafka(topic: str, events: int, seed: int, *extra: str) -> None:
    """``journey generate --topic`` with the same options as :func:`generate_file`."""
    run_journey(
        "generate", "--events", str(events), "--seed", str(seed), "--start", START,
        "--topic", topic, "--brokers", BROKERS, *extra,
    )  # fmt: skip


def replay_reference(path: Path, names: Names) -> tuple[str, int]:
    """``journey replay`` of ``path`` into the reference database: (report, sum of events)."""
    report = run_journey("replay", str(path), "--clickhouse", names.reference_url)
    _, events, open_sessions = progress(names.reference_url)
    assert open_sessions == 0, "replay closes every session"
    return report, events


def prepare_run(tmp_path: Path, names: Names, events: int, seed: int, *extra: str) -> GeneratedRun:
    """Generate the events to a file and replay them as the reference."""
    path = tmp_path / f"events-{seed}.jsonl"
    lines = generate_file(path, events, seed, *extra)
    report, expected = replay_reference(path, names)
    return GeneratedRun(path, lines, report, expected)


# ---------------------------------------------------------------- the worker process


def worker_env(
    names: Names, data_dir: Path, metrics_port: int, **settings: str | float | int
) -> dict[str, str]:
    """JOURNEY_* settings of a worker of this test; ``settings`` override (name w/o prefix)."""
    env: dict[str, str] = {
        "JOURNEY_BROKERS": BROKERS,
        "JOURNEY_INPUT_TOPIC": names.topic,
        "JOURNEY_APP_ID": names.app_id,
        "JOURNEY_CLICKHOUSE_URL": names.url,
        "JOURNEY_DATA_DIR": str(data_dir),
        "JOURNEY_METRICS_PORT": str(metrics_port),
        "JOURNEY_DLQ_TOPIC": names.dlq_topic,
        "JOURNEY_LATE_TOPIC": names.late_topic,
        "JOURNEY_SESSIONS_TOPIC": names.sessions_topic,
        "JOURNEY_TRANSITIONS_TOPIC": names.transitions_topic,
        "JOURNEY_IDLE_GRACE_S": "4",
        "JOURNEY_FLUSH_INTERVAL_S": "1",
        "JOURNEY_KAFKA_SESSION_TIMEOUT_S": "6",
    }
    for name, value in settings.items():
        env[f"JOURNEY_{name.upper()}"] = str(value)
    return env


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value for (sample, sample_labels), value in samples.items()
        if sample == name and wanted <= set(sample_labels)
    )  # fmt: skip


def by_label(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
             label: str) -> dict[str, float]:  # fmt: skip
    """``{label value: sum of sample values}`` of the samples called ``name`` (zeros left out)."""
    out: dict[str, float] = {}
    for (sample, sample_labels), value in samples.items():
        if sample == name and value:
            key = dict(sample_labels)[label]
            out[key] = out.get(key, 0.0) + value
    return out


def wait_complete(
    workers: Sequence[WorkerProcess], url: str, expected_events: int, timeout_s: float = 90.0
) -> None:
    """Until every expected event is in a closed session in ClickHouse and nothing is pending.

    The live workers must report no open session and no buffered row; the figures to reach
    come from the replay reference, so a worker that loses or doubles events times out here.
    """
    last: dict[str, Any] = {}

    def done() -> bool:
        for worker in workers:
            worker.assert_alive("before its sessions were complete")
        sessions, events, open_sessions = progress(url)
        last.update(sessions=sessions, events=events, open=open_sessions)
        if events != expected_events or open_sessions:
            return False
        for worker in workers:
            samples = worker.metrics()
            last[f"open/pending/late:{worker.metrics_port}"] = (
                total(samples, "journey_open_sessions"),
                total(samples, "journey_clickhouse_pending_rows"),
                total(samples, "journey_events_late_total"),
            )
            if total(samples, "journey_open_sessions") or total(
                samples, "journey_clickhouse_pending_rows"
            ):
                return False
        return True

    poll(
        done,
        timeout_s=timeout_s,
        interval_s=1.0,
        what=f"{expected_events} events in closed sessions at {url}",
        describe=lambda: (
            f"last seen {last} (expected events {expected_events}"
            + (
                "; MORE than replay accepted: events counted twice"
                if last.get("events", 0) > expected_events
                else ""
            )
            + ")\n"
            + "\n".join(w.log_tail(15) for w in workers)
        ),
    )


def assert_same_as_replay(names: Names) -> None:
    """Summary, session rows and order rows of the worker equal those of the replay."""
    worker_sessions = table_rows(names.url, "sessions", "session_id")
    reference_sessions = table_rows(names.reference_url, "sessions", "session_id")
    assert worker_sessions == reference_sessions, (
        "session rows differ from replay: "
        + describe_difference(worker_sessions, reference_sessions)
    )
    worker_orders = table_rows(names.url, "orders", "order_key")
    reference_orders = table_rows(names.reference_url, "orders", "order_key")
    assert worker_orders == reference_orders, (
        "order rows differ from replay: " + describe_difference(worker_orders, reference_orders)
    )
    assert summary(names.url) == summary(names.reference_url)
    assert_same_rollups(names)


def rollup_rows(url: str) -> list[tuple[Any, ...]]:
    """Every non-empty ``session_minutes`` row (FINAL), all columns but version, in key
    order; floats rounded to 6 places (ClickHouse sums them in no fixed order)."""
    described = [(row[0], row[1]) for row in query(url, "DESCRIBE TABLE session_minutes")]
    columns = [
        f"round({name}, 6)" if kind.startswith("Float") else name
        for name, kind in described
        if name != "version"
    ]
    return query(
        url,
        f"SELECT {', '.join(columns)} FROM session_minutes FINAL WHERE sessions > 0"
        " ORDER BY minute_ms, channel, device, furthest_stage",
    )


def assert_same_rollups(names: Names, timeout_s: float = 60.0) -> None:
    """The worker's per-minute rollups equal the replay's, within ``timeout_s``.

    The worker refreshes rollups with its checkpoints, so they may trail its session rows
    by a checkpoint interval (10 s with direct input).
    """
    reference = rollup_rows(names.reference_url)
    assert reference, "the replay wrote no rollups"
    deadline = time.monotonic() + timeout_s
    mine = rollup_rows(names.url)
    while mine != reference and time.monotonic() < deadline:
        time.sleep(1.0)
        mine = rollup_rows(names.url)
    assert mine == reference, "rollups differ from replay: " + describe_difference(mine, reference)


def seeded_delays(seed: int, count: int, low: float, high: float) -> list[float]:
    """``count`` reproducible random delays in [low, high] seconds."""
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in range(count)]


# ---------------------------------------------------------------- a private ClickHouse


@dataclass
class PrivateClickHouse:
    """A ClickHouse server of one test, run by deploy/stack.sh in its own folder and ports."""

    stack_dir: Path
    tcp_port: int
    http_port: int

    @property
    def env(self) -> dict[str, str]:
        """Environment that makes deploy/stack.sh run only this server."""
        env = dict(os.environ)
        env.update(
            STACK_DIR=str(self.stack_dir),
            STACK_SERVICES="clickhouse",
            # No TLS port: `make test` exports CLICKHOUSE_SECURE=1 for the shared stack,
            # whose TLS port this server would otherwise collide with.
            CLICKHOUSE_SECURE="0",
            CLICKHOUSE_TCP_PORT=str(self.tcp_port),
            CLICKHOUSE_HTTP_PORT=str(self.http_port),
            PYTHON=sys.executable,
            STACK_WAIT_S="90",
        )
        return env

    @property
    def base_url(self) -> str:
        """clickhouse://127.0.0.1:PORT/default of this server."""
        return f"clickhouse://127.0.0.1:{self.tcp_port}/default"

    def _stack(self, command: str) -> None:
        proc = subprocess.run(
            [str(STACK), command], env=self.env, capture_output=True, text=True,
            timeout=180, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            pytest.fail(f"deploy/stack.sh {command} failed:\n{proc.stdout}\n{proc.stderr}")

    def up(self) -> None:
        """Start the server (data in stack_dir persists across down/up) and wait healthy."""
        self._stack("up")

    def down(self) -> None:
        """Stop the server."""
        self._stack("down")
