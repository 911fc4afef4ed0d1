"""Garbage on the worker's own topics never stops it: counted, dead-lettered, skipped.

Mid-run, records nobody could decode are written to the by-visitor topic (one read by the
running agent, one that a restarted worker reads itself as a skipped message) and to the
visitors table's changelog (read when the restarted worker recovers its table). The worker
must keep running, dead-letter every one of them with reason ``corrupt_internal_message``
and where it was, count them by topic, and its figures for the valid events must equal a
replay of the same events.
"""

from __future__ import annotations

import json
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import BROKERS
from workerkit import (
    Names,
    WorkerProcess,
    assert_same_as_replay,
    poll,
    prepare_run,
    produce,
    progress,
    read_topic,
    total,
    wait_complete,
)

from streams.worker.flusher import watermark_key
from streams.worker.partitioning import partition_for_key

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

EVENTS = 3_000
PARTITIONS = 4
REJECTED = "journey_internal_messages_rejected_total"


def _send(topic: str, records: list[tuple[int, bytes, bytes]]) -> list[tuple[int, int]]:
    """Write (partition, key, value) records; returns (partition, offset) of each."""
    producer = KafkaProducer(bootstrap_servers=BROKERS, acks="all")
    try:
        futures = [producer.send(topic, key=k, value=v, partition=p) for p, k, v in records]
        producer.flush(timeout=30)
        return [(meta.partition, meta.offset) for meta in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close(timeout=10)


def _visitors(lines: list[bytes]) -> list[str]:
    """Visitor keys of the generated events, in order of first appearance."""
    keys: dict[str, None] = {}
    for line in lines:
        obj = json.loads(line)
        keys[obj.get("anonymous_id") or obj["user_id"]] = None
    return list(keys)


def _changelog_garbage(visitors: list[str]) -> list[tuple[int, bytes, bytes]]:
    """Records of the changelog that cannot be decoded, one of each kind."""
    first, second, third = (key.encode() for key in visitors[:3])
    offset = (5).to_bytes(8, "big")
    zlib_bomb = zlib.compress(b"[" + b" " * (40 * 1024 * 1024) + b"]", 9)
    return [
        # an lz4 block claiming 2 GiB, for a visitor the worker holds
        (partition_for_key(first, PARTITIONS), first, offset + b"\x04\xff\xff\xff\x7f" + b"\0" * 9),
        # a zlib stream inflating to 40 MiB (format 1), for another
        (partition_for_key(second, PARTITIONS), second, offset + zlib_bomb),
        # partition 2's own record with a JSON part that is not JSON
        (2, watermark_key(2), b"\0" * 16 + b"{garbage"),
        (3, b"\xff\xfe not utf-8", b"x"),  # a key that is no visitor's
        # a visitor's key in another partition than its own (the broker refuses no key)
        ((partition_for_key(third, PARTITIONS) + 1) % PARTITIONS, third, b""),
    ]


def _dead_letters(names: Names, expected: int) -> list[dict[str, Any]]:
    return [json.loads(value) for _, value in read_topic(names.dlq_topic, expected)]


@pytest.mark.integration
@pytest.mark.slow
def test_garbage_on_the_internal_topics_is_dead_lettered_and_skipped(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess]
) -> None:
    """By-visitor and changelog garbage mid-run: worker alive, DLQ and counter, rows = replay."""
    run = prepare_run(tmp_path, names, EVENTS, 13)
    by_visitor = f"{names.app_id}-events-by-visitor"
    changelog = f"{names.app_id}-visitors-changelog"
    quarter = len(run.lines) // 4
    worker = workers(names, "poison", input_keyed_by_visitor="false").start()
    worker.wait_ready()

    # 1. While the worker runs: garbage between events on both internal topics.
    produce(names.topic, run.lines[:quarter])
    checkpoints = "journey_checkpoints_total"

    def checkpointed() -> bool:
        worker.assert_alive("before the garbage")
        return progress(names.url)[1] > 0 and total(worker.metrics(), checkpoints) > 0

    poll(checkpointed, timeout_s=60, what="the first events checkpointed",
         describe=worker.log_tail)  # fmt: skip
    (live,) = _send(by_visitor, [(0, b"0", b"\xff\xfe this is not a by-visitor message")])
    in_changelog = _send(changelog, _changelog_garbage(_visitors(run.lines[:quarter])))
    produce(names.topic, run.lines[quarter : 2 * quarter])

    def counted() -> bool:
        worker.assert_alive("after the garbage")
        return total(worker.metrics(), REJECTED, topic="by_visitor") == 1

    poll(counted, timeout_s=60, what="the by-visitor garbage counted",
         describe=worker.log_tail)  # fmt: skip
    assert total(worker.metrics(), REJECTED, topic="changelog") == 0  # not read while running
    # A checkpoint after it: the restarted worker must not count or dead-letter it again.
    taken = total(worker.metrics(), checkpoints)
    poll(lambda: total(worker.metrics(), checkpoints) > taken, timeout_s=30,
         what="a checkpoint after the garbage", describe=worker.log_tail)  # fmt: skip

    # 2. An orderly restart, with a message the group's commit jumps over: the restarted
    # worker recovers its table from the changelog and reads that message itself.
    worker.stop(timeout_s=30)
    assert worker.proc is not None
    assert worker.proc.returncode == 0, worker.log_tail(40)  # stopped, not crashed
    (skipped,) = _send(by_visitor, [(1, b"1", b'{"e": "not a list of events"}')])
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, group_id=names.app_id,
                             enable_auto_commit=False)  # fmt: skip
    try:
        tp = TopicPartition(by_visitor, 1)
        consumer.commit({tp: OffsetAndMetadata(skipped[1] + 1, "", -1)})
    finally:
        consumer.close()
    worker.start()
    worker.wait_ready()
    produce(names.topic, run.lines[2 * quarter :])
    wait_complete([worker], names.url, run.expected_events, timeout_s=120)
    worker.assert_alive("after the run")

    samples = worker.metrics()
    assert total(samples, REJECTED, topic="changelog") == len(in_changelog), worker.log_tail(40)
    assert total(samples, REJECTED, topic="by_visitor") == 1  # the skipped one, read by repair
    assert total(samples, "journey_repaired_messages_total") >= 1
    dead = _dead_letters(names, 2 + len(in_changelog))
    assert {record["reason"] for record in dead} == {"corrupt_internal_message"}
    where = {(r["source"]["topic"], r["source"]["partition"], r["source"]["offset"]) for r in dead}
    assert where == {
        (by_visitor, *live),
        (by_visitor, *skipped),
        *((changelog, *at) for at in in_changelog),
    }
    assert_same_as_replay(names)
