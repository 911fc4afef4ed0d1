"""Rebalance: two workers share a four-partition input; one dies, the other takes over."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from workerkit import (
    Names,
    PacedProducer,
    WorkerProcess,
    assert_same_as_replay,
    poll,
    prepare_run,
    progress,
    seeded_delays,
    total,
    wait_complete,
)

EVENTS = 12_000
RATE = 400


def _accepted(worker: WorkerProcess) -> float:
    """Events this worker's intake accepted so far (0 when /metrics does not answer)."""
    samples = worker.scrape()
    return 0.0 if samples is None else total(samples, "journey_events_total")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("names", "direct"), [(4, "false"), (4, "true")], indirect=["names"], ids=["hop", "direct"]
)
def test_survivor_takes_over_a_killed_workers_partitions(
    tmp_path: Path,
    names: Names,
    workers: Callable[..., WorkerProcess],
    paced_producers: list[PacedProducer],
    direct: str,
) -> None:
    """Two workers of one app id; one SIGKILLed mid-run: the survivor finishes, rows exact.

    ``direct``: input read without the by-visitor hop, so the input partitions move with
    the state partitions, and the survivor reads the dead worker's from its checkpoints.
    """
    run = prepare_run(tmp_path, names, EVENTS, 21)
    mode = {"partitions": 4, "input_keyed_by_visitor": direct}
    first = workers(names, "first", **mode).start()
    second = workers(names, "second", **mode).start()
    first.wait_ready()
    second.wait_ready()
    producer = PacedProducer(names.topic, run.lines, RATE)
    paced_producers.append(producer)
    producer.start()

    def both_consuming() -> bool:
        first.assert_alive("while sharing the input")
        second.assert_alive("while sharing the input")
        return _accepted(first) > 0 and _accepted(second) > 0

    poll(both_consuming, timeout_s=90, what="both workers to consume input partitions",
         describe=lambda: f"accepted: {_accepted(first)} / {_accepted(second)}")  # fmt: skip
    (delay,) = seeded_delays(4, 1, 1.0, 3.0)
    time.sleep(delay)
    _, events_before_kill, _ = progress(names.url)
    assert events_before_kill < run.expected_events, "the kill must land mid-run"
    second.kill()

    producer.finish(timeout_s=120)
    # The second worker never comes back: every event of its partitions that reaches
    # ClickHouse (all of them, exactly once) went through the survivor after the rebalance.
    wait_complete([first], names.url, run.expected_events, timeout_s=150)
    assert_same_as_replay(names)
