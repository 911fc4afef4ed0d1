"""Prometheus metrics of the worker, created in one place from an injected registry.

Names are prefixed ``journey_``, in base units, counters end in ``_total``, and no label
carries a visitor or session id. No label takes a value from event data outside a fixed
set: ``event_type`` is one of the types the stage rules name, else ``other``; ``reason``
one of the intake's rejection reasons (``REJECTION_REASONS``), else ``other``. The other
labels are set by the code (stages, tables, partitions), never from event data.

The cart-abandonment ratio and per-stage drop-off are computable in PromQL from these
counters the moment the deciding events are processed:

    abandonment ratio = rate(journey_carts_abandoned_total[5m])
                        / rate(journey_cart_sessions_closed_total[5m])
    drop-off at stage S =
        rate(journey_sessions_closed_total{furthest_stage="S",converted="false"}[5m])
        / rate(journey_sessions_closed_total[5m])

(``converted`` is "true" only at the purchase stage, so the same expression gives the
SPEC's drop-off at every stage: awareness, consideration, purchase without a purchase.)
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from streams.engine.intake import REJECTION_REASONS
from streams.engine.stages import StageRules
from streams.errors import ConfigError
from streams.settings import Settings

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

#: The label value of anything from event data outside a label's fixed set.
OTHER = "other"

#: Event-time lag buckets (seconds): from live traffic to a backlog of hours.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
#: ClickHouse insert latency buckets (seconds).
WRITE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
CHECKPOINT_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120)


class BatchHistogram(Collector):
    """A histogram observed a batch of values at a time.

    ``prometheus_client.Histogram.observe`` walks its buckets in Python and takes a lock
    for the sum and for the bucket: about 1.5 us, paid for every event the worker takes
    (its event lag). Here a batch takes the lock once and finds each value's bucket with
    ``bisect`` (0.1-0.2 us a value). Exposed exactly like a ``Histogram`` without labels:
    ``_bucket`` (cumulative, ``le``), ``_count`` and ``_sum``.
    """

    #: Named as on prometheus_client's metrics (read by the documentation check).
    _type = "histogram"
    _labelnames: tuple[str, ...] = ()

    def __init__(
        self, name: str, documentation: str, buckets: Iterable[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = sorted(float(b) for b in buckets)
        #: Values per bucket (not cumulative); the last one is +Inf.
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, value: float) -> None:
        """Observe one value."""
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """Observe every value (one lock for all)."""
        bounds, counts = self._bounds, self._counts
        with self._lock:
            total = 0.0
            for value in values:
                counts[bisect_left(bounds, value)] += 1  # le: first bound >= value
                total += value
            self._sum += total

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip([*self._bounds, float("inf")], counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=total
        )

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._documentation)


#: Label values of ``journey_internal_messages_rejected_total``: the worker's own topics.
INTERNAL_TOPICS = ("by_visitor", "changelog", "customer_signals")


def _internal_rejected(registry: CollectorRegistry) -> Counter:
    """The counter of undecodable internal records, its series present from the start."""
    counter = Counter(
        "journey_internal_messages_rejected_total",
        "Records of the worker's own topics (by_visitor: the by-visitor topic; changelog: "
        "the visitors table's changelog; customer_signals: the customer signals topic) that "
        "could not be decoded: sent to the dead-letter topic as corrupt_internal_message and "
        "skipped.",
        ["topic"],
        registry=registry,
    )
    for topic in INTERNAL_TOPICS:
        counter.labels(topic)
    return counter


@dataclass(frozen=True, slots=True)
class JourneyMetrics:
    """Every metric the worker exports; build with :meth:`create`."""

    registry: CollectorRegistry
    events: Counter
    rejected: Counter
    internal_rejected: Counter
    late: Counter
    duplicates: Counter
    sessions_started: Counter
    sessions_closed: Counter
    stage_reached: Counter
    customer_transitions: Counter
    cart_sessions_closed: Counter
    carts_abandoned: Counter
    conversions: Counter
    revenue: Counter
    open_sessions: Gauge
    event_lag: BatchHistogram
    watermark_lag: Gauge
    clickhouse_write_seconds: Histogram
    clickhouse_rows: Counter
    clickhouse_errors: Counter
    clickhouse_pending_rows: Gauge
    consumer_lag: Gauge
    batches: Counter
    skipped_messages: Counter
    checkpoints: Counter
    checkpoint_records: Counter
    checkpoint_seconds: Histogram
    #: The values ``events``'s ``event_type`` label takes besides ``other``.
    event_types: frozenset[str]

    @classmethod
    def create(
        cls, registry: CollectorRegistry | None = None, rules: StageRules | None = None
    ) -> JourneyMetrics:
        """Register every metric in ``registry`` (a fresh one when omitted, as tests want).

        ``rules`` are the stage rules in force (the defaults when omitted): the event types
        they name are the values of the ``event_type`` label, with ``other`` for the rest.
        """
        reg = registry if registry is not None else CollectorRegistry(auto_describe=True)
        event_types = (rules if rules is not None else StageRules.default()).event_types
        return cls(
            event_types=event_types,
            registry=reg,
            events=Counter(
                "journey_events_total", "Accepted events by type.", ["event_type"], registry=reg
            ),
            rejected=Counter(
                "journey_events_rejected_total",
                "Events sent to the dead-letter topic, by reason.",
                ["reason"],
                registry=reg,
            ),
            internal_rejected=_internal_rejected(reg),
            late=Counter(
                "journey_events_late_total",
                "Events older than the slowest input partition's event time minus the allowed"
                " lateness, routed to the late topic.",
                registry=reg,
            ),
            duplicates=Counter(
                "journey_events_duplicate_total",
                "Events dropped as already seen: an event_id repeated in an open session, or an"
                " event the intake forwarded again (re-read input).",
                registry=reg,
            ),
            sessions_started=Counter(
                "journey_sessions_started_total",
                "Sessions opened (a session an earlier event re-identifies opens again under its"
                " new id).",
                registry=reg,
            ),
            sessions_closed=Counter(
                "journey_sessions_closed_total",
                "Sessions closed, by the furthest funnel stage they reached and whether they "
                "converted (a purchase).",
                ["furthest_stage", "converted"],
                registry=reg,
            ),
            stage_reached=Counter(
                "journey_stage_reached_total",
                "Sessions reaching a journey stage, counted when it happens.",
                ["stage"],
                registry=reg,
            ),
            customer_transitions=Counter(
                "journey_customer_transitions_total",
                "Customers reaching retention (a purchase in a second session) or advocacy "
                "(a first advocacy event), counted when it happens.",
                ["stage"],
                registry=reg,
            ),
            cart_sessions_closed=Counter(
                "journey_cart_sessions_closed_total",
                "Closed sessions that had an add_to_cart (the abandonment denominator).",
                registry=reg,
            ),
            carts_abandoned=Counter(
                "journey_carts_abandoned_total",
                "Closed sessions with an add_to_cart and no purchase.",
                registry=reg,
            ),
            conversions=Counter(
                "journey_conversions_total",
                "Sessions reaching their first purchase, counted when it happens.",
                registry=reg,
            ),
            revenue=Counter(
                "journey_revenue_total",
                "Revenue of new orders, in the store's currency units.",
                registry=reg,
            ),
            open_sessions=Gauge(
                "journey_open_sessions", "Sessions currently open in this worker.", registry=reg
            ),
            event_lag=BatchHistogram(
                "journey_event_lag_seconds",
                "Wall-clock time minus event time when an event is processed.",
                LAG_BUCKETS,
                reg,
            ),
            watermark_lag=Gauge(
                "journey_watermark_lag_seconds",
                "Wall-clock time minus the event-time watermark.",
                registry=reg,
            ),
            clickhouse_write_seconds=Histogram(
                "journey_clickhouse_write_seconds",
                "Duration of one ClickHouse flush (all tables).",
                buckets=WRITE_BUCKETS,
                registry=reg,
            ),
            clickhouse_rows=Counter(
                "journey_clickhouse_rows_total",
                "Rows written to ClickHouse, by table.",
                ["table"],
                registry=reg,
            ),
            clickhouse_errors=Counter(
                "journey_clickhouse_errors_total",
                "Failed ClickHouse flush attempts (each is retried).",
                registry=reg,
            ),
            clickhouse_pending_rows=Gauge(
                "journey_clickhouse_pending_rows",
                "Rows buffered for ClickHouse and not yet written.",
                registry=reg,
            ),
            consumer_lag=Gauge(
                "journey_consumer_lag_messages",
                "Messages between the consumer position and the end of each partition.",
                ["partition"],
                registry=reg,
            ),
            batches=Counter(
                "journey_batches_total", "Batches of messages processed.", registry=reg
            ),
            skipped_messages=Counter(
                "journey_repaired_messages_total",
                "Internal messages the consumer skipped (around a rebalance) that the worker "
                "fetched and applied itself.",
                registry=reg,
            ),
            checkpoints=Counter(
                "journey_checkpoints_total",
                "Checkpoints written (visitor records to the changelog) and their input "
                "acknowledged.",
                registry=reg,
            ),
            checkpoint_records=Counter(
                "journey_checkpoint_records_total",
                "Records the checkpoints wrote to the table's changelog.",
                registry=reg,
            ),
            checkpoint_seconds=Histogram(
                "journey_checkpoint_seconds",
                "Duration of one checkpoint, from its take to the acknowledgement of its "
                "input (encoding is spread over half the checkpoint interval).",
                buckets=CHECKPOINT_BUCKETS,
                registry=reg,
            ),
        )

    def count_events(self, by_type: Mapping[str, int]) -> None:
        """Count accepted events given per event type; a type the rules do not name is ``other``.

        Called once per batch with its counts, so the fold costs a lookup per distinct type.
        """
        known = self.event_types
        folded: dict[str, int] = {}
        for event_type, count in by_type.items():
            label = event_type if event_type in known else OTHER
            folded[label] = folded.get(label, 0) + count
        for label, count in folded.items():
            self.events.labels(label).inc(count)

    def count_rejection(self, reason: str) -> None:
        """Count one dead-lettered input; a reason outside ``REJECTION_REASONS`` is ``other``.

        Every reason the intake gives is in the set (the fuzz test of the intake checks it);
        the fold only guarantees the label's bound whatever a later change passes here.
        """
        self.rejected.labels(reason if reason in REJECTION_REASONS else OTHER).inc()


def serve_metrics(metrics: JourneyMetrics, settings: Settings) -> WSGIServer:
    """Serve ``/metrics`` on ``JOURNEY_METRICS_HOST``:``JOURNEY_METRICS_PORT`` in a daemon thread.

    Returns the server (``shutdown()`` and ``server_close()`` stop it). An address that
    cannot be bound (in use, not of this machine, a name that does not resolve) raises
    ``ConfigError`` naming both settings.
    """
    host, port = settings.metrics_host, settings.metrics_port
    try:
        server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve /metrics on JOURNEY_METRICS_HOST={host!r} JOURNEY_METRICS_PORT={port} "
            f"({exc.strerror or exc}); free the port, or pick another host or port"
        ) from None
    return server
