"""A worker applies by-visitor messages its consumer group jumped over, in offset order.

Faust's consumer was seen to start a partition past messages nothing had acknowledged (and
to leave the last messages of a partition undelivered). Here the jump is made on purpose:
the internal topic is filled before the worker starts and the group's committed offsets
are moved past some of its messages. The worker has no checkpoint for any partition, so it
must expect every message from the start of the log and read the skipped ones itself.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from support import BROKERS, create_topic
from workerkit import (
    Names,
    WorkerProcess,
    assert_same_as_replay,
    prepare_run,
    total,
    wait_complete,
)

from streams.engine.intake import parse_payload
from streams.engine.progress import ProgressReport
from streams.worker.codec import (
    chunk_forwarded,
    encode_forwarded,
    encode_report,
    encode_topic,
    forwarded_message,
)
from streams.worker.forwarder import FORWARD_MAX_BYTES
from streams.worker.partitioning import partition_for_key

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

EVENTS = 3_000
PARTITIONS = 4
#: Events per forwarded message: each partition gets a few dozen messages.
PER_MESSAGE = 25


def _fill_by_visitor_topic(topic: str, input_topic: str, lines: list[bytes]) -> dict[int, int]:
    """Forward the events as the intake would; returns messages per partition.

    Each line is one message of input partition 0 (its offset: the line number); every
    forwarded message carries a progress report of everything forwarded before it.
    """
    now_ms = int(time.time() * 1000)
    source_topic = encode_topic(input_topic)
    by_partition: dict[int, list[tuple[bytes, int]]] = defaultdict(list)
    top = 0
    for offset, line in enumerate(lines):
        for event in parse_payload(line, now_ms).events:
            top = max(top, event.ts_ms)
            by_partition[partition_for_key(event.visitor_key.encode(), PARTITIONS)].append(
                (encode_forwarded(event, 0, offset, 0), top)
            )
    producer = KafkaProducer(bootstrap_servers=BROKERS, acks="all")
    counts: dict[int, int] = {}
    try:
        for partition, forwarded in sorted(by_partition.items()):
            values = []
            for i in range(0, len(forwarded), PER_MESSAGE):
                group = forwarded[i : i + PER_MESSAGE]
                report = encode_report(ProgressReport(1, ((0, group[-1][1]),)))
                chunks = chunk_forwarded([encoded for encoded, _ in group], FORWARD_MAX_BYTES)
                values += [forwarded_message(source_topic, chunk, report) for chunk in chunks]
            for value in values:
                producer.send(topic, key=str(partition).encode(), value=value, partition=partition)
            counts[partition] = len(values)
        producer.flush(timeout=60)
    finally:
        producer.close()
    return counts


def _commit(group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, group_id=group, enable_auto_commit=False)
    try:
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
    finally:
        consumer.close()


@pytest.mark.integration
@pytest.mark.slow
def test_messages_skipped_by_the_consumer_group_are_read_and_applied(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess]
) -> None:
    """Partition 0 starts mid-log (a gap), partition 1 at its end (a stall): all applied."""
    run = prepare_run(tmp_path, names, EVENTS, 5)
    topic = f"{names.app_id}-events-by-visitor"
    create_topic(topic, PARTITIONS)
    counts = _fill_by_visitor_topic(topic, names.topic, run.lines)
    assert len(counts) == PARTITIONS, counts
    assert min(counts.values()) > 4, counts
    middle = counts[0] // 2
    _commit(
        names.app_id,
        {TopicPartition(topic, 0): middle, TopicPartition(topic, 1): counts[1]},
    )

    # Small batches: a repair flushes (and checkpoints) before it returns, as long ones do.
    worker = workers(names, "skipped", flush_rows=50).start()
    worker.wait_ready()
    wait_complete([worker], names.url, run.expected_events, timeout_s=120)
    assert_same_as_replay(names)
    # Exactly the messages the group jumped over were read by the worker itself: partition
    # 0's first half when its first message arrived, all of partition 1 once idle.
    repaired = total(worker.metrics(), "journey_repaired_messages_total")
    assert repaired == middle + counts[1], (repaired, middle, counts, worker.log_tail(20))
    log = worker.log_path.read_text(errors="replace")
    for partition, last in ((0, middle - 1), (1, counts[1] - 1)):
        assert f"consumer skipped messages 0-{last} of {topic}[{partition}]" in log
