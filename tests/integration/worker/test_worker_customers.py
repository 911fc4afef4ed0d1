"""Customer transitions in real time on a hand-made fixture: who is retained, who advocates.

Six visitors on four input partitions, their events written by hand below, and what the
``journey-transitions`` topic must carry, worked out by hand from the definitions
(docs/metrics.md, "Customer transitions in real time"):

* ``anon-a`` and ``anon-b`` are two devices of user ``u1``, logged in on both: a purchase
  on each, in two sessions -> ``customer_retained`` for ``u1``, once;
* ``anon-c`` (user ``u2``) purchases twice in one session -> not a repeat, nothing;
* ``anon-d`` reviews without ever purchasing -> ``customer_advocate`` for ``anon-d``
  (anonymous: the visitor key is the customer key);
* ``anon-e`` (user ``u3``) reviews in two sessions -> ``customer_advocate`` for ``u3``, once;
* ``anon-f`` purchases anonymously in two sessions 3 hours apart -> ``customer_retained``
  for ``anon-f``.

So two of each kind, and ``journey_customer_transitions_total`` counts 2 per stage. A
record of garbage written to the signals topic among ``u1``'s signals is dead-lettered
and skipped, and changes none of this.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import pytest
from support import BROKERS, poll
from workerkit import (
    Names,
    WorkerProcess,
    by_label,
    free_port,
    fresh_names,
    produce,
    read_topic,
    worker_env,
)

from streams.worker.partitioning import partition_for_key

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 4
HOUR = 3600
BASE = 1_760_000_000  # 2025-10-09T08:53:20Z, a Thursday


def event(n: int, kind: str, at_s: int, anon: str, user: str = "", **properties: object) -> bytes:
    """One event of the contract (SPEC section 3), ``at_s`` seconds after BASE."""
    doc: dict[str, object] = {
        "event_id": f"cust-{n:03d}",
        "event_type": kind,
        "timestamp": f"{_iso(BASE + at_s)}",
        "anonymous_id": anon,
        "page": {"url": f"https://shop.example.com/{kind}"},
    }
    if user:
        doc["user_id"] = user
    if properties:
        doc["properties"] = properties
    return json.dumps(doc).encode()


def _iso(epoch_s: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fixture_lines() -> list[bytes]:
    lines = [
        # u1 on device a: logs in, buys (order A1).
        event(1, "page_view", 0, "anon-a"),
        event(2, "login", 60, "anon-a", "u1"),
        event(3, "purchase", 120, "anon-a", "u1", order_id="A1", revenue=30.0, currency="USD"),
        # u1 on device b, 2 hours later: logged in, buys again (order B1): a repeat.
        event(4, "page_view", 2 * HOUR, "anon-b", "u1"),
        event(
            5,
            "purchase",
            2 * HOUR + 60,
            "anon-b",
            "u1",
            order_id="B1",
            revenue=12.0,
            currency="USD",
        ),
        # u2: two orders in one session: no repeat.
        event(6, "page_view", 0, "anon-c", "u2"),
        event(7, "purchase", 60, "anon-c", "u2", order_id="C1", revenue=5.0, currency="USD"),
        event(8, "purchase", 120, "anon-c", "u2", order_id="C2", revenue=6.0, currency="USD"),
        # anon-d reviews, never buys.
        event(9, "page_view", 0, "anon-d"),
        event(10, "review_submitted", 60, "anon-d", product_id="SKU-1", rating=5),
        # u3 reviews in two sessions.
        event(11, "review_submitted", 0, "anon-e", "u3", product_id="SKU-2", rating=4),
        event(12, "review_submitted", 2 * HOUR, "anon-e", "u3", product_id="SKU-3", rating=5),
        # anon-f buys anonymously, twice, 3 hours apart.
        event(13, "purchase", 0, "anon-f", order_id="F1", revenue=9.0, currency="USD"),
        event(14, "purchase", 3 * HOUR, "anon-f", order_id="F2", revenue=9.0, currency="USD"),
        # Later traffic of another visitor moves every partition's event time past the
        # sessions (so they also close: nothing here depends on it).
        *(event(20 + p, "page_view", 6 * HOUR, f"anon-late-{p}") for p in range(8)),
    ]
    return lines


EXPECTED = Counter(
    {("customer_retained", "u1"): 1, ("customer_retained", "anon-f"): 1,
     ("customer_advocate", "anon-d"): 1, ("customer_advocate", "u3"): 1}
)  # fmt: skip


def test_customer_transitions_are_published_once_per_customer(tmp_path: Path) -> None:
    # The two devices of u1 live in different partitions: the customer's state is reached
    # from both (the signals topic), not by one visitor's state.
    assert partition_for_key(b"anon-a", PARTITIONS) != partition_for_key(b"anon-b", PARTITIONS)
    with fresh_names("cust", input_partitions=PARTITIONS) as names:
        produce(names.topic, fixture_lines())
        run(tmp_path, names)


def send_raw(topic: str, partition: int, value: bytes) -> None:
    """One record, as is, to ``topic[partition]``."""
    producer = KafkaProducer(bootstrap_servers=BROKERS, acks="all")
    try:
        producer.send(topic, value=value, partition=partition).get(timeout=30)
    finally:
        producer.close(timeout=10)


def run(tmp_path: Path, names: Names) -> None:
    data_dir = tmp_path / "worker"
    data_dir.mkdir()
    port = free_port()
    env = worker_env(names, data_dir, port, partitions=PARTITIONS)
    worker = WorkerProcess(env, tmp_path / "worker.log", port)
    try:
        worker.start()
        worker.wait_ready()
        # Garbage on the signals topic (created by the worker): dead-lettered, skipped, and
        # the customers' records are unchanged.
        signals = f"{names.app_id}-customer-signals"
        garbage_partition = partition_for_key(b"u1", PARTITIONS)  # among u1's real signals
        send_raw(signals, garbage_partition, b"\xc1 not a signal")

        def counted() -> bool:
            worker.assert_alive("while customers were being counted")
            samples = worker.scrape() or {}
            made = by_label(samples, "journey_customer_transitions_total", "stage")
            rejected = by_label(samples, "journey_internal_messages_rejected_total", "topic")
            return sum(made.values()) >= 4 and rejected

        poll(
            counted,
            timeout_s=90,
            what="4 customer transitions and the garbage rejected",
            describe=worker.log_tail,
        )
        records = read_topic(names.transitions_topic, expected=0, timeout_s=10, committed=True)
        decoded = [json.loads(value) for _key, value in records]
        customers = [d for d in decoded if d["kind"].startswith("customer_")]
        assert Counter((d["kind"], d["customer_key"]) for d in customers) == EXPECTED
        for d, (key, _value) in zip(decoded, records, strict=True):
            if d["kind"].startswith("customer_"):
                assert key == d["customer_key"].encode()  # keyed by customer
                assert d["stage"] == {"customer_retained": "retention",
                                      "customer_advocate": "advocacy"}[d["kind"]]  # fmt: skip
        retained_u1 = next(d for d in customers if d["customer_key"] == "u1")
        # Whichever device's purchase came second made it: a session of u1 with a purchase.
        assert retained_u1["visitor_key"] in ("anon-a", "anon-b")
        samples = worker.metrics()
        stages = by_label(samples, "journey_customer_transitions_total", "stage")
        assert stages == {"retention": 2.0, "advocacy": 2.0}
        rejected = by_label(samples, "journey_internal_messages_rejected_total", "topic")
        assert rejected == {"customer_signals": 1.0}
        dead = [json.loads(v) for _k, v in read_topic(names.dlq_topic, expected=1, committed=True)]
        assert [(d["reason"], d["source"]["topic"], d["source"]["partition"]) for d in dead] == [
            ("corrupt_internal_message", signals, garbage_partition)
        ]
    finally:
        worker.stop()
