"""The worker's metrics: BatchHistogram as Histogram, and the /metrics server's address."""

from __future__ import annotations

import contextlib
import random
import socket
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.errors import ConfigError
from streams.metrics import LAG_BUCKETS, BatchHistogram, JourneyMetrics, serve_metrics
from streams.settings import Settings


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


def _free_port() -> int:
    """A TCP port nothing listens on at the moment (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    """Status and body of a real HTTP GET (5-s timeout)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def _refused(host: str, port: int) -> bool:
    """Whether a TCP connection to ``host``:``port`` is refused."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


@contextlib.contextmanager
def _serving(env: dict[str, str]) -> Iterator[tuple[JourneyMetrics, int]]:
    """The worker's /metrics server started from ``env`` settings on a free port, then stopped."""
    port = _free_port()
    settings = Settings.from_env({**env, "JOURNEY_METRICS_PORT": str(port)})
    metrics = JourneyMetrics.create(CollectorRegistry())
    server = serve_metrics(metrics, settings)
    try:
        yield metrics, port
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_host_binds_the_given_address_only() -> None:
    """JOURNEY_METRICS_HOST=127.0.0.1: /metrics answers there and nowhere else (127.0.0.2)."""
    with _serving({"JOURNEY_METRICS_HOST": "127.0.0.1"}) as (metrics, port):
        metrics.count_events({"purchase": 2, "made_up": 5})
        status, body = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert 'journey_events_total{event_type="purchase"} 2.0' in body.splitlines()
        assert 'journey_events_total{event_type="other"} 5.0' in body.splitlines()
        assert _refused("127.0.0.2", port)  # another loopback address: not bound


def test_metrics_host_defaults_to_every_interface() -> None:
    """Without the setting the endpoint binds 0.0.0.0: it answers on 127.0.0.2 as well."""
    assert Settings().metrics_host == "0.0.0.0"
    with _serving({}) as (_, port):
        assert _get(f"http://127.0.0.2:{port}/metrics")[0] == 200


def test_an_address_that_cannot_be_bound_names_the_settings() -> None:
    """An address of no interface here fails with both settings named, no OSError."""
    settings = Settings.from_env({"JOURNEY_METRICS_HOST": "192.0.2.1"})  # TEST-NET-1
    with pytest.raises(
        ConfigError, match=r"JOURNEY_METRICS_HOST='192\.0\.2\.1' JOURNEY_METRICS_PORT"
    ):
        serve_metrics(JourneyMetrics.create(CollectorRegistry()), settings)


@pytest.mark.parametrize("host", ["", "a b", "-x", "http://x", "1.2.3.4:80"])
def test_a_metrics_host_that_is_no_address_is_refused_at_start(host: str) -> None:
    """A value that is neither an IP address nor a host name stops the start, naming it."""
    with pytest.raises(ConfigError, match="JOURNEY_METRICS_HOST"):
        Settings.from_env({"JOURNEY_METRICS_HOST": host})
