"""Forwarder and DirectIntake: a batch validated, rejections dead-lettered, events handed on.

Driven without Faust or Kafka: topics and the intake's progress are fakes; in direct mode
the partition states, the publisher and the flusher are real, over a sink that writes
nowhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from worker_fakes import NullOutput

from streams.engine.intake import NOT_KEYED_BY_VISITOR, parse_payload
from streams.engine.progress import ProgressReport
from streams.engine.stages import StageRules, parse_stage_rules
from streams.engine.state import Corrupt
from streams.metrics import JourneyMetrics
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.worker.codec import decode_forwarded
from streams.worker.flusher import Flusher
from streams.worker.forwarder import DirectIntake, Forwarder
from streams.worker.partition import PartitionState
from streams.worker.partitioning import partition_for_key
from streams.worker.publisher import Publisher
from streams.worker.runtime import WorkerRuntime

NOW = 1_700_000_000_000
PARTITIONS = 4
#: A store's rules naming types the defaults do not (page_view, a custom one) and a
#: conversion type named nowhere else.
CUSTOM_RULES = """
stages:
  awareness: [page_view]
  consideration: [quote_request, product_view]
  purchase: [add_to_cart]
  advocacy: [{event: survey_response, scale: 5, min_score: 5}]
conversion: [order_placed]
"""


class Topic:
    """A topic that records what is sent to it; every send is delivered at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, int | None]] = []

    async def send(
        self, *, key: bytes | None = None, value: bytes | None = None, partition: int | None = None
    ) -> asyncio.Future[None]:
        self.sent.append((key, value, partition))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


class Intake:
    """The intake's progress: reports the highest event time of every partition seen."""

    def __init__(self, epochs: Mapping[int, int] | None = None) -> None:
        self.epochs = dict(epochs or {})
        self.tops: list[dict[int, int | None]] = []

    async def report(self, tops: Mapping[int, int | None]) -> ProgressReport | None:
        self.tops.append(dict(tops))
        progress = tuple(sorted((p, t) for p, t in tops.items() if t is not None))
        return ProgressReport(PARTITIONS, progress)


def _record(partition: int, offset: int, payload: object) -> Any:
    value = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return types.SimpleNamespace(
        topic="clickstream", partition=partition, offset=offset, value=value
    )


def _event(event_id: str, visitor: str, ts: int = NOW - 1_000) -> dict[str, object]:
    return {"event_id": event_id, "event_type": "page_view", "timestamp": ts,
            "anonymous_id": visitor}  # fmt: skip


def _visitors_of(partition: int, count: int) -> list[str]:
    """Visitor keys that hash to ``partition`` of PARTITIONS."""
    found = []
    n = 0
    while len(found) < count:
        key = f"visitor-{n}"
        if partition_for_key(key.encode(), PARTITIONS) == partition:
            found.append(key)
        n += 1
    return found


def _count(metrics: JourneyMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _forwarder(metrics: JourneyMetrics, intake: Intake) -> tuple[Forwarder, Topic, Topic]:
    by_visitor, dlq = Topic(), Topic()
    settings = Settings(partitions=PARTITIONS)
    forwarder = Forwarder(settings, metrics, by_visitor, dlq, intake)
    return forwarder, by_visitor, dlq


class Writer:
    """The sink's RowWriter (no flush is due in these tests)."""

    def write(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class Direct:
    """A DirectIntake over real partition states, publisher and flusher, with fake topics."""

    intake: DirectIntake
    runtime: WorkerRuntime
    flusher: Flusher
    sink: ClickHouseSink
    by_visitor: Topic
    dlq: Topic


def _direct(metrics: JourneyMetrics, intake: Intake, partitions: Sequence[int]) -> Direct:
    settings = Settings(partitions=PARTITIONS)
    config, rules = settings.session_config(), StageRules.default()
    runtime = WorkerRuntime()
    for partition in partitions:
        runtime.partitions[partition] = PartitionState(partition, config, rules, direct=True)
    sink = ClickHouseSink(Writer(), None)
    output = NullOutput()
    publisher = Publisher(settings, metrics, sink, output)
    table = types.SimpleNamespace(
        changelog_topic=types.SimpleNamespace(get_topic_name=lambda: "changelog"), data={}
    )
    flusher = Flusher(settings, runtime, sink, output, table)
    by_visitor, dlq = Topic(), Topic()
    direct = DirectIntake(settings, metrics, by_visitor, dlq, intake, runtime, publisher, flusher)
    return Direct(direct, runtime, flusher, sink, by_visitor, dlq)


def test_forward_groups_events_by_visitor_partition_and_dead_letters_rejections() -> None:
    """One message per partition with its visitors' events and sources; reasons to the DLQ."""
    (a,) = _visitors_of(0, 1)
    b, c = _visitors_of(2, 2)
    batch = [
        _record(1, 10, _event("e1", a)),
        _record(1, 11, b"{not json"),
        _record(3, 5, {"batch": [_event("e2", b), {"event_type": "page_view"}, _event("e3", c)]}),
    ]
    metrics = JourneyMetrics.create(CollectorRegistry())
    intake = Intake()
    forwarder, by_visitor, dlq = _forwarder(metrics, intake)
    asyncio.run(forwarder.forward(batch))

    reasons = [orjson.loads(value or b"")["reason"] for _, value, _ in dlq.sent]
    assert reasons == ["invalid_json", "missing_field:event_id"]
    assert intake.tops == [{1: NOW - 1_000, 3: NOW - 1_000}]
    sent = {partition: decode_forwarded(value or b"") for _, value, partition in by_visitor.sent}
    assert sorted(sent) == [0, 1, 2, 3]  # every partition hears the report
    assert [ev.visitor_key for ev in sent[0].events] == [a]
    assert sent[0].sources == [(1, 10, 0)]
    assert [ev.visitor_key for ev in sent[2].events] == [b, c]
    assert sent[2].sources == [(3, 5, 0), (3, 5, 2)]  # the rejected element keeps index 1
    assert sent[1].events == []
    assert sent[3].events == []
    assert all(message.report is not None for message in sent.values())
    assert all(key == str(partition).encode() for key, _, partition in by_visitor.sent)
    # No default stage rule names page_view: its events are counted as other.
    assert _count(metrics, "journey_events_total", event_type="other") == 3
    assert _count(metrics, "journey_event_lag_seconds_count") == 3
    assert _count(metrics, "journey_events_rejected_total", reason="invalid_json") == 1
    assert _count(metrics, "journey_batches_total") == 1


def test_forward_sends_the_report_alone_at_most_every_interval() -> None:
    """A partition without events hears the report alone only once per REPORT_INTERVAL_S."""
    (a,) = _visitors_of(0, 1)
    metrics = JourneyMetrics.create(CollectorRegistry())
    forwarder, by_visitor, _ = _forwarder(metrics, Intake())

    async def twice() -> None:
        await forwarder.forward([_record(0, 0, _event("e1", a))])
        await forwarder.forward([_record(0, 1, _event("e2", a))])

    asyncio.run(twice())
    partitions = [partition for _, _, partition in by_visitor.sent]
    assert partitions == [0, 1, 2, 3, 0]  # the second batch: partition 0's events only


def test_direct_intake_dead_letters_events_of_another_partition() -> None:
    """Direct mode: an event whose visitor hashes elsewhere is dead-lettered, not applied."""
    home, elsewhere = _visitors_of(1, 1)[0], _visitors_of(2, 1)[0]
    batch = [
        _record(1, 40, _event("e1", home)),
        _record(1, 41, _event("e2", elsewhere)),
        _record(1, 42, {"batch": [_event("e3", home), _event("e4", elsewhere)]}),
        _record(3, 9, _event("e5", home)),
        _record(0, 3, _event("e6", home)),  # no state loaded here
    ]
    metrics = JourneyMetrics.create(CollectorRegistry())
    direct = _direct(metrics, Intake({1: 0, 3: 6}), [1, 3])
    direct.runtime.partitions[3].epoch = 7  # loaded again since the intake's position was set
    asyncio.run(direct.intake.take(batch))

    rejected = [orjson.loads(value or b"") for _, value, _ in direct.dlq.sent]
    assert [r["reason"] for r in rejected] == [NOT_KEYED_BY_VISITOR] * 2
    assert [(r["source"]["offset"], r["batch_index"]) for r in rejected] == [(41, None), (42, 1)]
    assert orjson.loads(rejected[1]["payload"])["event_id"] == "e4"
    # e1 and e3 applied to partition 1's state (one session), partition 3's left alone.
    assert direct.runtime.partitions[1].open_sessions == 1
    assert direct.runtime.partitions[3].open_sessions == 0
    assert direct.flusher.unacked_events == 2
    assert direct.flusher.uncommitted == {1: 43}  # committed with the next checkpoint
    assert direct.sink.pending >= 1
    assert _count(metrics, "journey_events_rejected_total", reason=NOT_KEYED_BY_VISITOR) == 2
    assert _count(metrics, "journey_events_total", event_type="other") == 2
    assert _count(metrics, "journey_event_lag_seconds_count") == 2
    assert _count(metrics, "journey_batches_total") == 1
    # The report reaches the other workers' partitions through the by-visitor topic.
    sent = direct.by_visitor.sent
    assert sorted(partition for _, _, partition in sent) == [0, 1, 2, 3]
    assert all(decode_forwarded(value or b"").events == [] for _, value, _ in sent)


@pytest.mark.parametrize("meanwhile", ["revoked", "loaded again"])
def test_direct_intake_handles_only_partitions_still_its_own_once_it_has_the_lock(
    meanwhile: str,
) -> None:
    """A partition revoked (or loaded again) while its batch waited for the lock: untouched.

    Its events are neither applied nor counted, its rejections not dead-lettered, its input
    not committed: the new owner reads those records again and handles them. The other
    partition of the batch is handled as usual.
    """
    (one,), (two,) = _visitors_of(1, 1), _visitors_of(2, 1)
    batch = [
        _record(1, 10, _event("e1", one)),
        _record(1, 11, b"{not json"),
        _record(1, 12, _event("e2", two)),  # not keyed by visitor
        _record(2, 20, _event("e3", two)),
        _record(2, 21, b"{not json"),
    ]
    metrics = JourneyMetrics.create(CollectorRegistry())
    intake = Intake({1: 0, 2: 0})
    direct = _direct(metrics, intake, [1, 2])
    runtime = direct.runtime

    async def scenario() -> None:
        await runtime.lock.acquire()  # a flush or a revocation holds it
        taking = asyncio.ensure_future(direct.intake.take(batch))
        await asyncio.sleep(0.01)
        assert intake.tops == [{1: NOW - 1_000, 2: NOW - 1_000}]  # validated, waiting
        if meanwhile == "revoked":
            del runtime.partitions[1]
        else:
            config, rules = Settings().session_config(), StageRules.default()
            runtime.partitions[1] = PartitionState(1, config, rules, direct=True)
            runtime.partitions[1].epoch = 1  # its records now follow a new start
        runtime.lock.release()
        await taking

    asyncio.run(scenario())
    rejected = [orjson.loads(value or b"") for _, value, _ in direct.dlq.sent]
    assert [(r["source"]["partition"], r["reason"]) for r in rejected] == [(2, "invalid_json")]
    assert _count(metrics, "journey_events_rejected_total", reason="invalid_json") == 1
    assert _count(metrics, "journey_events_rejected_total", reason=NOT_KEYED_BY_VISITOR) is None
    assert _count(metrics, "journey_events_total", event_type="other") == 1
    assert _count(metrics, "journey_event_lag_seconds_count") == 1
    assert direct.flusher.unacked_events == 1
    assert direct.flusher.uncommitted == {2: 22}
    assert runtime.partitions[2].open_sessions == 1
    assert all(state.open_sessions == 0 for p, state in runtime.partitions.items() if p != 2)


def _series(metrics: JourneyMetrics, name: str) -> dict[str, float]:
    """``{labels: value}`` of ``name`` in the registry's /metrics text (creation times aside)."""
    text = generate_latest(metrics.registry).decode()
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line[len(name) :].rpartition(" ")
            found[labels] = float(value)
    return found


@pytest.mark.parametrize("rules_text", [None, CUSTOM_RULES], ids=["default rules", "store rules"])
def test_event_type_label_takes_only_the_rules_types_and_other(rules_text: str | None) -> None:
    """10,000 distinct event types make at most one series per type the rules name, plus other.

    The named types keep exact counts of their own; every other type is counted as other.
    """
    rules = StageRules.default() if rules_text is None else parse_stage_rules(rules_text)
    named = sorted({rule.event for rule in rules.rules} | set(rules.conversion))
    rng = random.Random(13)
    strangers = {f"{rng.choice(['custom', 'x', 'Ω', 'page view'])}-{n}" for n in range(10_000)}
    strangers -= set(named)
    assert len(strangers) == 10_000
    types = [*strangers, *named, *named[:3]]  # the first three named types come twice
    rng.shuffle(types)
    visitors = _visitors_of(1, 50)
    records = [
        _record(n % 3, n, {**_event(f"e{n}", visitors[n % 50]), "event_type": event_type})
        for n, event_type in enumerate(types)
    ]
    metrics = JourneyMetrics.create(CollectorRegistry(), rules)
    forwarder, _, dlq = _forwarder(metrics, Intake())
    for start in range(0, len(records), 2_000):
        asyncio.run(forwarder.forward(records[start : start + 2_000]))

    assert dlq.sent == []
    series = _series(metrics, "journey_events_total")
    assert len(series) <= len(named) + 1
    expected = {f'{{event_type="{t}"}}': 2.0 if t in named[:3] else 1.0 for t in named}
    expected['{event_type="other"}'] = 10_000.0
    assert series == expected


def test_a_reason_outside_the_rejection_reasons_is_counted_as_other() -> None:
    """The reason label keeps its fixed set whatever reason a caller passes."""
    metrics = JourneyMetrics.create(CollectorRegistry())
    for reason in ("invalid_json", "bad_field:page.url", "bad_field:page.x", "nonsense", "z"):
        metrics.count_rejection(reason)
    assert _series(metrics, "journey_events_rejected_total") == {
        '{reason="invalid_json"}': 1.0,
        '{reason="bad_field:page.url"}': 1.0,
        '{reason="other"}': 3.0,
    }


def test_forward_under_pii_hash_sends_pseudonyms_by_their_partition() -> None:
    """JOURNEY_PII=hash: forwarded events carry pseudonyms, routed by the pseudonym's hash."""

    key = "a-key-of-thirty-two-bytes-length"
    settings = Settings(partitions=PARTITIONS, pii="hash", pii_key=key)
    metrics = JourneyMetrics.create(CollectorRegistry())
    by_visitor, dlq = Topic(), Topic()
    forwarder = Forwarder(settings, metrics, by_visitor, dlq, Intake())
    visitors = [f"raw-visitor-{n}" for n in range(12)]
    batch = [_record(0, n, _event(f"e{n}", v)) for n, v in enumerate(visitors)]
    batch.append(_record(0, 99, b'{"anonymous_id": "raw-visitor-0", broken'))
    asyncio.run(forwarder.forward(batch))

    expected = {
        hmac.new(key.encode(), v.encode(), hashlib.sha256).hexdigest()[:32] for v in visitors
    }
    seen = set()
    for _, value, partition in by_visitor.sent:
        assert b"raw-visitor" not in (value or b"")
        message = decode_forwarded(value or b"")
        assert not isinstance(message, Corrupt), message
        for ev in message.events:
            assert partition_for_key(ev.visitor_key.encode(), PARTITIONS) == partition
            seen.add(ev.anonymous_id)
    assert seen == expected
    ((_, dead, _),) = dlq.sent
    record = orjson.loads(dead or b"")
    assert record["reason"] == "invalid_json"
    assert record["payload"] is None
    assert b"raw-visitor" not in (dead or b"")


def test_keep_parses_with_parse_payload_itself() -> None:
    """JOURNEY_PII=keep costs nothing: the handler's parser is parse_payload, unwrapped."""

    metrics = JourneyMetrics.create(CollectorRegistry())
    forwarder, _, _ = _forwarder(metrics, Intake())
    assert forwarder._parse is parse_payload
