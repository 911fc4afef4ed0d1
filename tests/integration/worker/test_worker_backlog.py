"""Exact under backlog (issue 11): input waiting on several partitions when the worker starts.

Every test here produces days of generated traffic to a multi-partition input topic
*before* the worker starts, so the worker reads it as a backlog, partitions unevenly (one
fetch can hold days of one partition and minutes of another). The worker must call no
event late (its counter and the late topic stay empty) and end with exactly the rows and
figures of ``journey replay`` over the same events (the reference, computed without Kafka).
Before per-partition event time, 66% of a 3-partition backlog of real data went late.

Traffic density: ``sparse`` is 1 event per minute per input partition over three days
(the case that turned events late); ``dense`` is the bench's default density (about 140
events per second of event time).

The worker runs with fewer partitions than its input (``worker_partitions``): keyed by
visitor with equal counts, input partition i would map to by-visitor partition i (both
use Kafka's murmur2), every by-visitor partition would see one input partition only, and
no skew could arise. With 8 input partitions and the worker's default 4, 4 input and 3,
each by-visitor partition mixes several input partitions, as in a store whose topic was
not sized for us.
"""

from __future__ import annotations

import json
import random
import time
import uuid
import warnings
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from workerkit import (
    BROKERS,
    GeneratedRun,
    Names,
    WorkerProcess,
    assert_same_as_replay,
    poll,
    prepare_run,
    progress,
    read_topic,
    seeded_delays,
    total,
    visitor_key,
    wait_complete,
)

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer
    from kafka.partitioner.default import murmur2

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Three days at one event per minute per input partition.
SPARSE_DAYS = 3
#: The bench's default: 1,000,000 events over 2 hours of event time.
DENSE_RATE = 140.0
DENSE_EVENTS = 60_000
#: Half the allowed lateness (JOURNEY_ALLOWED_LATENESS_S default 600 s), in milliseconds.
HALF_LATENESS_MS = 300_000
#: Wait for a backlog to be complete (the worker processes ~10k events/s here).
COMPLETE_S = 180.0

#: JOURNEY_PARTITIONS of the worker for an input topic of N partitions (see the docstring).
WORKER_PARTITIONS = {4: 3, 8: 4}

#: A Kafka record to produce: key, value and the partition (None: by key, Kafka's hash).
Record = tuple[bytes | None, bytes, int | None]


def generate_backlog(
    tmp_path: Path,
    names: Names,
    partitions: int,
    density: str,
    seed: int,
    days: int = SPARSE_DAYS,
) -> GeneratedRun:
    """Generated traffic for ``partitions`` input partitions, and its replay reference."""
    if density == "sparse":
        events = partitions * 60 * 24 * days
        rate = partitions / 60
    else:
        events, rate = DENSE_EVENTS, DENSE_RATE
    run = prepare_run(tmp_path, names, events, seed, "--sim-rate", f"{rate:.6f}")
    # All in the past, or the end would wait for the wall clock (sessions close only once
    # it passes them) and the 24 h future check would accept more in the worker than in
    # the replay that ran earlier.
    last_ms = max(event_ms(line) for line in run.lines)
    assert last_ms < (time.time() - 3600) * 1000, "generated traffic reaches the present"
    return run


def event_ms(line: bytes) -> int:
    """Event time (epoch ms) of a generated line: RFC 3339 text or epoch milliseconds."""
    stamp = json.loads(line)["timestamp"]
    if isinstance(stamp, int):
        return stamp
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def by_visitor(lines: Sequence[bytes]) -> list[Record]:
    """Keyed by visitor, as a store's collector would: Kafka's partitioner places them."""
    return [(visitor_key(line), line, None) for line in lines]


def produce_records(topic: str, records: Sequence[Record]) -> None:
    """Send ``records`` in order and wait until Kafka has every one."""
    producer = KafkaProducer(bootstrap_servers=BROKERS, acks=1, linger_ms=20)
    try:
        futures = [
            producer.send(topic, key=key, value=value, partition=partition)
            for key, value, partition in records
        ]
        producer.flush(timeout=120)
        for future in futures:
            future.get(timeout=60)
    finally:
        producer.close(timeout=10)


def assert_nothing_late(names: Names, worker: WorkerProcess) -> None:
    """No event went late: the live worker's counter is 0 and the late topic is empty.

    The topic is what every incarnation wrote (counters restart with a process).
    """
    samples = worker.metrics()
    assert total(samples, "journey_events_late_total") == 0, worker.log_tail(20)
    late = read_topic(names.late_topic, expected=0, timeout_s=5)
    assert late == [], f"{len(late)} events on the late topic, e.g. {late[:2]}"


def run_backlog(
    names: Names,
    workers: Callable[..., WorkerProcess],
    run: GeneratedRun,
    records: Sequence[Record],
    input_partitions: int,
    direct: bool = False,
) -> WorkerProcess:
    """Produce the whole backlog, then start a worker; wait until it equals replay.

    ``direct``: the worker takes its input without the by-visitor hop (as many state
    partitions as input partitions, JOURNEY_INPUT_KEYED_BY_VISITOR=true).
    """
    produce_records(names.topic, records)
    worker = workers(names, "backlog", **_worker_settings(input_partitions, direct)).start()
    worker.wait_ready()
    wait_complete([worker], names.url, run.expected_events, timeout_s=COMPLETE_S)
    assert total(worker.metrics(), "journey_events_total") == len(run.lines)
    assert_nothing_late(names, worker)
    assert_same_as_replay(names)
    return worker


@pytest.mark.parametrize(
    ("names", "partitions", "density", "direct"),
    [
        (4, 4, "sparse", False),
        (8, 8, "sparse", False),
        (4, 4, "dense", False),
        (8, 8, "dense", False),
        (4, 4, "sparse", True),
        (8, 8, "dense", True),
    ],
    indirect=["names"],
    ids=["4-sparse", "8-sparse", "4-dense", "8-dense", "direct-4-sparse", "direct-8-dense"],
)
def test_backlog_across_partitions_in_time_order(
    tmp_path: Path,
    names: Names,
    workers: Callable[..., WorkerProcess],
    partitions: int,
    density: str,
    direct: bool,
) -> None:
    """Days of traffic in time order on 4 and 8 partitions: nothing late, rows equal replay.

    ``direct``: without the by-visitor hop (input keyed by visitor). Each state partition
    then reads one input partition only, yet its watermark is still the slowest input
    partition's progress, so a fast partition never makes another's events late.
    """
    seed = 41 + partitions + (2 if direct else 0)
    run = generate_backlog(tmp_path, names, partitions, density, seed=seed)
    run_backlog(names, workers, run, by_visitor(run.lines), partitions, direct=direct)


@pytest.mark.parametrize(
    ("names", "direct", "seed"),
    [(8, False, 51), (8, True, 53)],
    indirect=["names"],
    ids=["hop", "direct"],
)
def test_backlog_with_disorder_of_half_the_allowed_lateness(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess], direct: bool, seed: int
) -> None:
    """Each event produced up to 5 minutes after its place in time: still none late.

    ``direct``: read without the by-visitor hop (JOURNEY_INPUT_KEYED_BY_VISITOR=true).
    """
    run = generate_backlog(tmp_path, names, 8, "sparse", seed=seed)
    rng = random.Random(seed)
    shuffled = sorted(run.lines, key=lambda line: event_ms(line) + rng.randrange(HALF_LATENESS_MS))
    assert shuffled != run.lines
    run_backlog(names, workers, run, by_visitor(shuffled), 8, direct=direct)


@pytest.mark.parametrize("names", [4], indirect=True)
def test_backlog_keyed_at_random(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess]
) -> None:
    """Input keyed by a random id (a visitor's events over every partition): the same."""
    run = generate_backlog(tmp_path, names, 4, "sparse", seed=61)
    rng = random.Random(61)
    records: list[Record] = [
        (uuid.UUID(int=rng.getrandbits(128)).bytes, line, None) for line in run.lines
    ]
    run_backlog(names, workers, run, records, 4)


@pytest.mark.parametrize("names", [4], indirect=True)
def test_backlog_with_an_empty_partition_and_one_that_stops_halfway(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess]
) -> None:
    """Partition 3 never gets traffic, partition 2 none after the first half: sessions close.

    Both hold the watermark back only until they have been read to their end and idle for
    JOURNEY_IDLE_GRACE_S (4 s in these tests), then drop out (docs/architecture.md).
    """
    run = generate_backlog(tmp_path, names, 3, "sparse", seed=71)
    times = [event_ms(line) for line in run.lines]
    halfway = (min(times) + max(times)) // 2
    records: list[Record] = []
    for line, ts in zip(run.lines, times, strict=True):
        key = visitor_key(line)
        assert key is not None
        bucket = zlib.crc32(key)
        partition = bucket % 3
        if partition == 2 and ts >= halfway:
            partition = bucket % 2  # the visitor's later events move to partition 0 or 1
        records.append((key, line, partition))
    assert {p for _, _, p in records} == {0, 1, 2}
    assert all(ts < halfway for (_, _, p), ts in zip(records, times, strict=True) if p == 2)
    run_backlog(names, workers, run, records, 4)


@pytest.mark.parametrize(
    ("names", "direct"), [(4, False), (4, True)], indirect=["names"], ids=["hop", "direct"]
)
def test_backlog_with_three_sigkills_during_the_catch_up(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess], direct: bool
) -> None:
    """Three SIGKILLs while the backlog is read: nothing late, lost or doubled.

    Each restart re-reads the input from the intake's last commit (direct: from the
    state's checkpoint): the events it takes again are dropped by their source, or by
    their visitor's record, not called late once their sessions have closed.
    """
    # Twice the sparse density (2 events per minute per partition) over four days: enough
    # work for three kills, and still all in the past.
    run = generate_backlog(tmp_path, names, 8, "sparse", seed=81, days=4)
    produce_records(names.topic, by_visitor(run.lines))
    worker = workers(names, "killed", **_worker_settings(4, direct)).start()
    worker.wait_ready()
    for number, delay in enumerate(seeded_delays(20261127, 3, 0.1, 0.6), start=1):
        poll(lambda: _processing(worker), timeout_s=90, what=f"incarnation {number} to process",
             describe=worker.log_tail)  # fmt: skip
        time.sleep(delay)
        # Work remains: events not yet in ClickHouse, or sessions not yet closed.
        _, events_in_clickhouse, open_sessions = progress(names.url)
        assert events_in_clickhouse < run.expected_events or open_sessions, (
            f"kill {number} would land after the catch-up completed; add events"
        )
        worker.kill()
        worker.start()
        worker.wait_ready()
    wait_complete([worker], names.url, run.expected_events, timeout_s=COMPLETE_S)
    assert_nothing_late(names, worker)
    assert_same_as_replay(names)


def _worker_settings(input_partitions: int, direct: bool) -> dict[str, str | int]:
    """The worker's partitions (and mode) for an input topic of ``input_partitions``."""
    if direct:
        return {"partitions": input_partitions, "input_keyed_by_visitor": "true"}
    return {"partitions": WORKER_PARTITIONS[input_partitions]}


@pytest.mark.parametrize("names", [4], indirect=True)
def test_backlog_read_directly_keyed_at_random_dead_letters_the_misplaced(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess]
) -> None:
    """A producer that does not key by visitor, with the direct path configured anyway.

    Every event in another partition than its visitor's goes to the dead-letter topic as
    ``not_keyed_by_visitor``, none is lost silently: those plus the events the worker took
    are all the input. Expected counts come from Kafka's murmur2 here, not the worker's.
    """
    run = generate_backlog(tmp_path, names, 4, "sparse", seed=63, days=1)
    rng = random.Random(63)
    records: list[Record] = []
    misplaced = 0
    for line in run.lines:
        key = uuid.UUID(int=rng.getrandbits(128)).bytes
        visitor = visitor_key(line)
        assert visitor is not None
        partition = rng.randrange(4)
        misplaced += (murmur2(visitor) & 0x7FFFFFFF) % 4 != partition
        records.append((key, line, partition))
    assert 0 < misplaced < len(records)
    produce_records(names.topic, records)
    worker = workers(names, "misplaced", **_worker_settings(4, direct=True)).start()
    worker.wait_ready()
    poll(
        lambda: total(worker.metrics(), "journey_events_total") + misplaced >= len(records),
        timeout_s=COMPLETE_S, what="every event taken or dead-lettered",
        describe=worker.log_tail,
    )  # fmt: skip
    samples = worker.metrics()
    assert total(samples, "journey_events_total") == len(records) - misplaced
    dead = read_topic(names.dlq_topic, expected=misplaced, timeout_s=60)
    reasons = [json.loads(value)["reason"] for _, value in dead]
    assert reasons == ["not_keyed_by_visitor"] * misplaced


@pytest.mark.parametrize("names", [4], indirect=True)
def test_a_worker_in_the_other_input_mode_stops_with_the_setting_named(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess]
) -> None:
    """An app's state written through the hop is never read as the direct path's.

    The offsets kept per visitor mean by-visitor offsets in one mode and input offsets in
    the other; a worker started with the other setting must stop, naming it, instead of
    skipping or re-applying events.
    """
    run = generate_backlog(tmp_path, names, 4, "sparse", seed=91, days=1)
    produce_records(names.topic, by_visitor(run.lines))
    first = workers(names, "hop", **_worker_settings(4, direct=False)).start()
    first.wait_ready()
    wait_complete([first], names.url, run.expected_events, timeout_s=COMPLETE_S)
    first.stop()  # SIGTERM: a last checkpoint records the mode with every partition
    second = workers(names, "direct", **_worker_settings(4, direct=True)).start()
    poll(lambda: not second.alive, timeout_s=90, what="the worker in the other mode to stop",
         describe=second.log_tail)  # fmt: skip
    assert second.proc is not None
    assert second.proc.returncode != 0
    assert "JOURNEY_INPUT_KEYED_BY_VISITOR=false" in second.log_tail(200)


def _processing(worker: WorkerProcess) -> bool:
    """True once this incarnation works on the backlog (its counters start at 0).

    Its intake may have nothing left to read (an earlier one forwarded the whole input),
    so sessions started or closed count as well as events taken in.
    """
    worker.assert_alive("before it could be killed")
    samples = worker.scrape()
    return samples is not None and any(
        total(samples, name) > 0
        for name in (
            "journey_events_total",
            "journey_sessions_started_total",
            "journey_sessions_closed_total",
        )
    )
