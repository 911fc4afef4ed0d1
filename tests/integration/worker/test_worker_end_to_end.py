"""Generated events -> Kafka -> ``journey worker`` -> ClickHouse, checked against replay.

One run is shared by the tests of this module (a module-scoped fixture): the worker reads
15,000 generated events from a four-partition topic until the input is idle and every
session is closed; the same events, generated to a file with the same seed, are replayed
into a reference database. The worker stays up until the module ends so that its /metrics
endpoint can be read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from workerkit import (
    Names,
    WorkerProcess,
    by_label,
    describe_difference,
    free_port,
    fresh_names,
    generate_file,
    generate_to_kafka,
    query,
    read_topic,
    replay_reference,
    summary,
    table_rows,
    total,
    wait_complete,
    worker_env,
)

EVENTS = 15_000
SEED = 5


@dataclass
class CompletedRun:
    """A finished worker run and its replay reference."""

    names: Names
    worker: WorkerProcess
    expected_events: int


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompletedRun]:
    """Generate to Kafka and to a file, run the worker until complete, replay the file."""
    tmp = tmp_path_factory.mktemp("end_to_end")
    with fresh_names("e2e", input_partitions=4) as names:
        path = tmp / "events.jsonl"
        generate_file(path, EVENTS, SEED)
        _, expected = replay_reference(path, names)
        generate_to_kafka(names.topic, EVENTS, SEED)
        data_dir = tmp / "worker"
        data_dir.mkdir()
        port = free_port()
        worker = WorkerProcess(worker_env(names, data_dir, port), tmp / "worker.log", port)
        try:
            worker.start()
            worker.wait_ready()
            wait_complete([worker], names.url, expected, timeout_s=120)
            yield CompletedRun(names, worker, expected)
        finally:
            worker.stop()


@pytest.mark.integration
@pytest.mark.slow
def test_summary_equals_replay(completed_run: CompletedRun) -> None:
    """`journey summary` of the worker's tables equals that of `journey replay`, key by key."""
    names = completed_run.names
    streamed = summary(names.url)
    replayed = summary(names.reference_url)
    assert streamed["events"] == completed_run.expected_events
    differing = {k: (streamed.get(k), v) for k, v in replayed.items() if streamed.get(k) != v}
    assert not differing, f"summary keys differing (worker, replay): {differing}"
    assert streamed == replayed


@pytest.mark.integration
@pytest.mark.slow
def test_session_and_order_rows_equal_replay(completed_run: CompletedRun) -> None:
    """Every live session row and order row (all columns but version) equals replay's."""
    names = completed_run.names
    for table, key in (("sessions", "session_id"), ("orders", "order_key")):
        streamed = table_rows(names.url, table, key)
        replayed = table_rows(names.reference_url, table, key)
        assert streamed, f"the worker wrote no {table} rows"
        assert streamed == replayed, f"{table}: " + describe_difference(streamed, replayed)


@pytest.mark.integration
@pytest.mark.slow
def test_sessions_topic_ends_with_every_replayed_row(completed_run: CompletedRun) -> None:
    """The last record of every session on the sessions topic is replay's row of it.

    Keyed by session id, one record per change: the last one per key is the session's
    final row (closed), column for column. Ids merged away may have records too; every
    replayed session must have one.
    """
    names = completed_run.names
    columns = [c for (c, *_) in query(names.reference_url, "DESCRIBE TABLE sessions")]
    keep = [c for c in columns if c not in ("version", "deleted")]
    replayed = {
        row[0]: dict(zip(keep, row, strict=True))
        for row in query(
            names.reference_url,
            f"SELECT {', '.join(keep)} FROM sessions FINAL WHERE deleted = 0 ORDER BY session_id",
        )
    }
    last: dict[str, dict[str, object]] = {}
    for key, value in read_topic(names.sessions_topic, expected=len(replayed)):
        last[key.decode()] = json.loads(value)
    missing = sorted(set(replayed) - set(last))
    assert not missing, f"{len(missing)} replayed sessions have no record, e.g. {missing[:3]}"
    differing = [sid for sid, row in replayed.items() if last[sid] != row]
    assert not differing, (
        f"{len(differing)} sessions differ, e.g. {differing[0]}: topic {last[differing[0]]} "
        f"!= replay {replayed[differing[0]]}"
    )


@pytest.mark.integration
@pytest.mark.slow
def test_metrics_agree_with_clickhouse(completed_run: CompletedRun) -> None:
    """The /metrics counters equal the figures of the sessions and orders in ClickHouse."""
    names = completed_run.names
    samples = completed_run.worker.metrics()
    # The reference tables come from replay (and equal the worker's, see the tests above).
    ref = names.reference_url
    ((sessions, events, converted, abandoned),) = query(
        ref,
        "SELECT count(), sum(events), sum(converted), sum(has_cart = 1 AND converted = 0) "
        "FROM sessions FINAL WHERE deleted = 0",
    )
    by_stage = dict(
        query(
            ref,
            "SELECT furthest_stage, count() FROM sessions FINAL WHERE deleted = 0 "
            "GROUP BY furthest_stage",
        )
    )
    ((revenue,),) = query(ref, "SELECT sum(revenue) FROM orders FINAL WHERE deleted = 0")

    assert total(samples, "journey_events_total") == events
    assert total(samples, "journey_sessions_started_total") == sessions
    closed = by_label(samples, "journey_sessions_closed_total", "furthest_stage")
    assert closed == {stage: float(n) for stage, n in by_stage.items()}
    # Purchase-stage drop-off (SPEC: purchase-stage sessions without a purchase) in PromQL
    # terms: the converted="false" series of the purchase stage.
    ((purchase_dropoff,),) = query(
        ref,
        "SELECT count() FROM sessions FINAL WHERE deleted = 0 "
        "AND furthest_stage = 'purchase' AND converted = 0",
    )
    assert purchase_dropoff > 0, "the generated traffic has purchase-stage drop-offs"
    assert (
        total(
            samples, "journey_sessions_closed_total", furthest_stage="purchase", converted="false"
        )
        == purchase_dropoff
    )
    assert by_label(samples, "journey_sessions_closed_total", "converted").get("true") == converted
    assert total(samples, "journey_carts_abandoned_total") == abandoned
    assert total(samples, "journey_conversions_total") == converted
    assert round(total(samples, "journey_revenue_total"), 2) == round(revenue, 2)
    # Clean input: nothing rejected, late or duplicated; nothing left buffered or open.
    assert total(samples, "journey_events_rejected_total") == 0
    assert total(samples, "journey_events_late_total") == 0
    assert total(samples, "journey_events_duplicate_total") == 0
    assert total(samples, "journey_open_sessions") == 0
    assert total(samples, "journey_clickhouse_pending_rows") == 0
    assert total(samples, "journey_clickhouse_errors_total") == 0


@pytest.mark.integration
@pytest.mark.slow
def test_customer_records_equal_the_sessions_they_come_from(completed_run: CompletedRun) -> None:
    """Each retained customer and advocate once on the transitions topic, as SQL finds them.

    Independent of the worker's customer state: by SQL over the replayed sessions, a
    customer (the session's user_id, else its visitor key) with converted sessions in two
    or more sessions is retained, one with an advocacy-flagged session an advocate.
    """
    names = completed_run.names
    customer = "if(user_id != '', user_id, visitor_key)"
    retained = query(
        names.reference_url,
        f"SELECT {customer} FROM sessions FINAL WHERE deleted = 0 AND converted = 1 "
        f"GROUP BY {customer} HAVING count() >= 2",
    )
    advocates = query(
        names.reference_url,
        f"SELECT DISTINCT {customer} FROM sessions FINAL WHERE deleted = 0 AND advocacy = 1",
    )
    expected = {("customer_retained", k) for (k,) in retained} | {
        ("customer_advocate", k) for (k,) in advocates
    }
    assert expected, "the generated run has no repeat purchaser nor advocate"
    records = read_topic(names.transitions_topic, expected=0, timeout_s=10, committed=True)
    decoded = [json.loads(value) for _key, value in records]
    found = [(d["kind"], d["customer_key"]) for d in decoded if d["kind"].startswith("customer_")]
    assert len(found) == len(set(found)), "a customer record came twice"
    assert set(found) == expected
    samples = completed_run.worker.metrics()
    counts = {"retention": float(len(retained)), "advocacy": float(len(advocates))}
    assert by_label(samples, "journey_customer_transitions_total", "stage") == {
        stage: n
        for stage, n in counts.items()
        if n  # by_label leaves zeros out
    }
