"""Crash safety: a worker SIGKILLed mid-run and restarted loses and doubles nothing."""

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

EVENTS = 15_000
#: Messages per second sent while the worker runs: the input outlasts the kill/restart
#: cycles, so every kill lands while the worker is consuming.
RATE = 350


def _processing(worker: WorkerProcess) -> bool:
    """True once this incarnation has taken in events (its counters start at 0)."""
    worker.assert_alive("before it could be interrupted")
    samples = worker.scrape()
    return samples is not None and total(samples, "journey_events_total") > 0


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("direct", ["false", "true"], ids=["hop", "direct"])
def test_sigkill_and_sigterm_mid_run_lose_and_double_nothing(
    tmp_path: Path,
    names: Names,
    workers: Callable[..., WorkerProcess],
    paced_producers: list[PacedProducer],
    direct: str,
) -> None:
    """Three SIGKILLs and a SIGTERM at seeded random moments mid-run: final rows equal replay.

    ``direct``: the input read without the by-visitor hop (the test's producer keys by
    visitor and the input topic has the worker's 4 partitions).
    """
    run = prepare_run(tmp_path, names, EVENTS, 11)
    worker = workers(names, "crash", input_keyed_by_visitor=direct).start()
    worker.wait_ready()
    producer = PacedProducer(names.topic, run.lines, RATE)
    paced_producers.append(producer)
    producer.start()

    interruptions: list[str] = []
    delays = seeded_delays(20261120, 4, 0.5, 3.0)
    for number, delay in enumerate(delays, start=1):
        poll(lambda: _processing(worker), timeout_s=90, what=f"incarnation {number} to process",
             describe=worker.log_tail)  # fmt: skip
        time.sleep(delay)
        _, events_in_clickhouse, _ = progress(names.url)
        # Mid-processing: this incarnation is working and the run is not complete.
        worker.assert_alive(f"before interruption {number}")
        assert events_in_clickhouse < run.expected_events, (
            f"interruption {number} would land after the run completed; slow the producer"
        )
        if number < len(delays):
            worker.kill()
            interruptions.append(f"SIGKILL after {delay:.2f} s ({events_in_clickhouse} events)")
        else:
            # The last one is an orderly stop: it must not hang on in-flight messages.
            began = time.monotonic()
            worker.stop(timeout_s=30)
            stopped_in = time.monotonic() - began
            assert worker.proc is not None
            assert worker.proc.returncode != -9, (
                f"SIGTERM mid-run did not stop the worker within 30 s; it was SIGKILLed\n"
                f"{worker.log_tail(20)}"
            )
            interruptions.append(f"SIGTERM after {delay:.2f} s, exited in {stopped_in:.1f} s")
        worker.start()
        worker.wait_ready()

    producer.finish(timeout_s=120)
    wait_complete([worker], names.url, run.expected_events, timeout_s=150)
    assert len(interruptions) == 4, interruptions
    assert_same_as_replay(names)
