"""Exactly-once output topics: a read_committed consumer sees every record once across SIGKILLs."""

from __future__ import annotations

import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from support import BROKERS
from workerkit import (
    Names,
    PacedProducer,
    WorkerProcess,
    poll,
    prepare_run,
    progress,
    seeded_delays,
    total,
    wait_complete,
)

from streams.engine.intake import parse_payload
from streams.engine.sessionizer import EngineOutput, sessionize_all
from streams.engine.stages import load_stage_rules
from streams.settings import Settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer

EVENTS = 6_000
#: Messages per second: the input outlasts the three kill/restart cycles.
RATE = 160
#: A checkpoint (one transaction) every 2 s in both modes, so the test waits little for
#: the last one.
CHECKPOINT_S = "2"


class CommittedReader(threading.Thread):
    """Reads topics with isolation_level=read_committed in the background, as a consumer would."""

    def __init__(self, topics: list[str]) -> None:
        super().__init__(name="read-committed", daemon=True)
        self.topics = topics
        self.records: dict[str, list[tuple[bytes, bytes]]] = {topic: [] for topic in topics}
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        """Poll until stopped (at most 10 minutes)."""
        try:
            consumer = KafkaConsumer(
                *self.topics,
                bootstrap_servers=BROKERS,
                auto_offset_reset="earliest",
                enable_auto_commit=False,
                group_id=None,
                isolation_level="read_committed",
                metadata_max_age_ms=1000,
            )
            try:
                deadline = time.monotonic() + 600
                while not self._stop_event.is_set() and time.monotonic() < deadline:
                    for tp, records in consumer.poll(timeout_ms=300).items():
                        with self._lock:
                            self.records[tp.topic].extend((r.key, r.value) for r in records)
            finally:
                consumer.close()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def snapshot(self, topic: str) -> list[tuple[bytes, bytes]]:
        """The records of ``topic`` read so far."""
        with self._lock:
            return list(self.records[topic])

    def stop(self) -> None:
        """Stop reading and wait for the thread (if it was started)."""
        self._stop_event.set()
        if self.ident is not None:
            self.join(30)


@pytest.fixture
def committed_reader(names: Names) -> Iterator[CommittedReader]:
    """A read_committed reader of the output topics (the test starts it); always stopped."""
    reader = CommittedReader([names.transitions_topic, names.sessions_topic, names.late_topic])
    try:
        yield reader
    finally:
        reader.stop()


def _processing(worker: WorkerProcess) -> bool:
    """True once this incarnation has taken in events (its counters start at 0)."""
    worker.assert_alive("before it could be interrupted")
    samples = worker.scrape()
    return samples is not None and total(samples, "journey_events_total") > 0


def _replay(path: Path) -> EngineOutput:
    """The engine's output for the whole file at once (what replay computes)."""
    now_ms = int(time.time() * 1000)
    events = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            events.extend(parse_payload(line, now_ms).events)
    return sessionize_all(events, Settings().session_config(), load_stage_rules(None))


def _replayed(out: EngineOutput) -> tuple[Counter[tuple[str, str, str]], set[str]]:
    """From a replay: (kind, stage, session) of every transition; the session ids."""
    transitions = Counter((t.kind, t.stage, t.session_id) for t in out.transitions)
    return transitions, {row.session_id for row in out.sessions}


def _transitions(records: list[tuple[bytes, bytes]]) -> Counter[tuple[str, str, str]]:
    """(kind, stage, session) of the sessions' transitions (customer records left out)."""
    decoded = [orjson.loads(value) for _key, value in records]
    return Counter(
        (t["kind"], t["stage"], t["session_id"])
        for t in decoded
        if not t["kind"].startswith("customer_")
    )


def _customer_records(records: list[tuple[bytes, bytes]]) -> Counter[tuple[str, str]]:
    """(kind, customer key) of the customer records."""
    decoded = [orjson.loads(value) for _key, value in records]
    return Counter(
        (t["kind"], t["customer_key"]) for t in decoded if t["kind"].startswith("customer_")
    )


def _expected_customers(out: EngineOutput) -> set[tuple[str, str]]:
    """Customers retained and advocating, by set arithmetic on replay's transitions.

    Not the worker's state machine: a customer (user_id, else visitor key) with converted
    transitions in two or more sessions is retained; one with an advocacy transition, an
    advocate. In time order, what the worker knows when a session announces is what
    replay's transition carries.
    """
    purchase_sessions: dict[str, set[str]] = {}
    advocates = set()
    for t in out.transitions:
        key = t.user_id or t.visitor_key
        if t.kind == "stage" and t.stage == "converted":
            purchase_sessions.setdefault(key, set()).add(t.session_id)
        elif t.kind == "stage" and t.stage == "advocacy":
            advocates.add(key)
    retained = {k for k, sessions in purchase_sessions.items() if len(sessions) >= 2}
    return {("customer_retained", k) for k in retained} | {
        ("customer_advocate", k) for k in advocates
    }


def _repeated(records: list[tuple[bytes, bytes]]) -> dict[tuple[bytes, bytes], int]:
    return {pair: n for pair, n in Counter(records).items() if n > 1}


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("direct", ["false", "true"], ids=["hop", "direct"])
def test_sigkills_leave_no_duplicate_for_a_read_committed_consumer(
    tmp_path: Path,
    names: Names,
    workers: Callable[..., WorkerProcess],
    paced_producers: list[PacedProducer],
    committed_reader: CommittedReader,
    direct: str,
) -> None:
    """Three SIGKILLs mid-run: read_committed sees each record once, transitions equal replay."""
    run = prepare_run(tmp_path, names, EVENTS, 13)
    replayed = _replay(run.path)
    expected_transitions, expected_sessions = _replayed(replayed)
    worker = workers(
        names, "eos", input_keyed_by_visitor=direct, checkpoint_interval_s=CHECKPOINT_S
    ).start()
    worker.wait_ready()
    # Started once the worker created the topics (the broker would create them otherwise).
    committed_reader.start()
    producer = PacedProducer(names.topic, run.lines, RATE)
    paced_producers.append(producer)
    producer.start()

    for number, delay in enumerate(seeded_delays(20261128, 3, 1.0, 3.0), start=1):
        poll(lambda: _processing(worker), timeout_s=60, what=f"incarnation {number} to process",
             describe=worker.log_tail)  # fmt: skip
        time.sleep(delay)
        _, events_in_clickhouse, _ = progress(names.url)
        worker.assert_alive(f"before SIGKILL {number}")
        assert events_in_clickhouse < run.expected_events, (
            f"SIGKILL {number} would land after the run completed; slow the producer"
        )
        # In time order nothing is late: this incarnation re-read its predecessor's input.
        assert total(worker.metrics(), "journey_events_late_total") == 0
        worker.kill()
        worker.start()
        worker.wait_ready()

    producer.finish(timeout_s=60)
    wait_complete([worker], names.url, run.expected_events, timeout_s=60)
    assert total(worker.metrics(), "journey_events_late_total") == 0

    expected_customers = _expected_customers(replayed)
    assert expected_customers, "the generated run has no repeat purchaser nor advocate"
    want = sum(expected_transitions.values()) + len(expected_customers)

    def all_transitions_read() -> bool:
        assert committed_reader.error is None, committed_reader.error
        return len(committed_reader.snapshot(names.transitions_topic)) >= want

    def read_so_far() -> str:
        return f"read {len(committed_reader.snapshot(names.transitions_topic))}"

    poll(all_transitions_read, timeout_s=30, what=f"{want} committed transitions",
         describe=read_so_far)  # fmt: skip
    time.sleep(3)  # anything more would be a duplicate: give it time to show
    transitions = committed_reader.snapshot(names.transitions_topic)
    sessions = committed_reader.snapshot(names.sessions_topic)

    repeated = _repeated(transitions)
    assert not repeated, (
        f"{sum(repeated.values()) - len(repeated)} duplicate transition records, e.g. "
        f"{next(iter(repeated))!r}"
    )
    assert _transitions(transitions) == expected_transitions
    customers = _customer_records(transitions)
    assert not [c for c, n in customers.items() if n > 1], customers  # once per customer
    assert set(customers) == expected_customers
    repeated = _repeated(sessions)
    assert not repeated, (
        f"{sum(repeated.values()) - len(repeated)} duplicate session records, e.g. "
        f"{next(iter(repeated))!r}"
    )
    closed: Counter[str] = Counter()
    for _key, value in sessions:
        row: dict[str, Any] = orjson.loads(value)
        if row["closed"]:
            closed[row["session_id"]] += 1
    assert set(closed) == expected_sessions
    assert max(closed.values()) == 1, "a session's final row was published twice"
    # The input is in event time order: a late record is an event re-read after a crash.
    assert committed_reader.snapshot(names.late_topic) == []
