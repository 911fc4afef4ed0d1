"""BatchHistogram: exposed exactly as prometheus_client's Histogram given the same values."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.metrics import LAG_BUCKETS, BatchHistogram


def _samples(registry: CollectorRegistry, name: str) -> list[str]:
    """The exposition lines of ``name`` other than its creation time."""
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith(name) and "_created" not in line
    ]


def test_batch_histogram_matches_prometheus_histogram() -> None:
    """Bucket counts (cumulative, le inclusive), count and sum equal Histogram's."""
    rng = random.Random(5)
    values = [rng.choice([0.0, 0.1, 1.0, 86400.0, 1e6]) for _ in range(50)]
    values += [rng.expovariate(0.2) for _ in range(500)]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    batched = BatchHistogram("lag_seconds", "lag", LAG_BUCKETS, ours)
    reference = Histogram("lag_seconds", "lag", buckets=LAG_BUCKETS, registry=theirs)
    batched.observe_many(values[:300])
    batched.observe(values[300])
    batched.observe_many(values[301:])
    for value in values:
        reference.observe(value)
    mine = _samples(ours, "lag_seconds")
    expected = _samples(theirs, "lag_seconds")
    assert [line for line in mine if "_sum" not in line] == [
        line for line in expected if "_sum" not in line
    ]
    (mine_sum,) = (float(line.split()[-1]) for line in mine if "_sum" in line)
    (expected_sum,) = (float(line.split()[-1]) for line in expected if "_sum" in line)
    assert abs(mine_sum - expected_sum) <= 1e-9 * expected_sum
