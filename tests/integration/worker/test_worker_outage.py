"""ClickHouse outage: the worker waits with bounded memory and loses nothing.

The worker writes to a private ClickHouse server that deploy/stack.sh runs for this test
only (own folder, own ports); it is stopped for about 30 seconds mid-run and started again
on the same data. The replay reference lives on the shared test server.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from workerkit import (
    MIB,
    Names,
    PacedProducer,
    PrivateClickHouse,
    WorkerProcess,
    assert_same_as_replay,
    poll,
    prepare_run,
    progress,
    total,
    wait_complete,
)

EVENTS = 12_000
RATE = 300
OUTAGE_S = 30.0
SAMPLE_EVERY_S = 5.0
#: Generous: the worker idles at about 150 MiB; the point is that it is bounded.
RSS_LIMIT = 1536 * MIB
#: Growth allowed from the first to the last sample of the outage.
RSS_GROWTH_LIMIT = 200 * MIB


@pytest.mark.integration
@pytest.mark.slow
def test_worker_survives_clickhouse_outage_with_exact_figures(
    tmp_path: Path,
    names: Names,
    workers: Callable[..., WorkerProcess],
    paced_producers: list[PacedProducer],
    private_clickhouse: PrivateClickHouse,
) -> None:
    """ClickHouse down 30 s mid-run: worker alive, errors counted, RSS bounded, rows exact."""
    run = prepare_run(tmp_path, names, EVENTS, 31)
    names.clickhouse_base = private_clickhouse.base_url
    worker = workers(names, "outage").start()
    worker.wait_ready()
    producer = PacedProducer(names.topic, run.lines, RATE)
    paced_producers.append(producer)
    producer.start()

    def some_rows_written() -> bool:
        worker.assert_alive("before the outage")
        return progress(names.url)[1] > 0

    poll(some_rows_written, timeout_s=90, what="the first rows in the private ClickHouse",
         describe=worker.log_tail)  # fmt: skip
    assert progress(names.url)[1] < run.expected_events, "the outage must start mid-run"

    errors_before = total(worker.metrics(), "journey_clickhouse_errors_total")
    private_clickhouse.down()
    began = time.monotonic()
    rss: list[int] = []
    for _ in range(int(OUTAGE_S / SAMPLE_EVERY_S) + 1):
        if time.monotonic() - began >= OUTAGE_S:
            break
        time.sleep(SAMPLE_EVERY_S)
        worker.assert_alive("during the ClickHouse outage")
        worker.metrics()  # the endpoint keeps answering while writes fail
        rss.append(worker.rss_bytes())
    errors_during = total(worker.metrics(), "journey_clickhouse_errors_total")
    private_clickhouse.up()

    assert errors_during > errors_before, "failed ClickHouse writes must be counted"
    assert len(rss) >= 5, rss
    assert max(rss) < RSS_LIMIT, f"RSS during the outage (MiB): {[r // MIB for r in rss]}"
    assert rss[-1] - rss[0] < RSS_GROWTH_LIMIT, (
        f"RSS grew steadily during the outage (MiB): {[r // MIB for r in rss]}"
    )

    producer.finish(timeout_s=120)
    wait_complete([worker], names.url, run.expected_events, timeout_s=150)
    worker.assert_alive("after the outage")
    assert_same_as_replay(names)
