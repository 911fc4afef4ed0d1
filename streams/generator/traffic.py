"""The traffic model: visitors arrive, run their sessions, and events come out in time order.

Pure: a seeded ``random.Random`` and a start time in, messages out; no clock, no I/O.
Visitors arrive as a Poisson process sized so events come at ``events_per_s`` per second
of event time. Each visitor plans one session at a time (a returning visitor's next one
starts more than 30 minutes after the last event), and a heap merges all visitors' planned
events into event-time order. The run starts "mid-flight": arrivals begin a warm-up period
before ``start`` and events before ``start`` are dropped, so the rate is right at once and
the first sessions are already in progress, as on a live site.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

from streams.generator.catalog import DEVICES, LOCALES, build_catalog
from streams.generator.malformed import INVALID_JSON, MALFORMED_KINDS, malformed
from streams.generator.personas import PERSONAS, SCRIPTS, Persona, Store
from streams.generator.session import Event, PlannedEvent, SessionWriter, Visitor, new_id

VALID = "valid"
_WARMUP_MAX_S = 600.0
_WARMUP_MAX_EVENTS = 15_000
#: Gap before a returning visitor's next session: always over the 30-minute timeout.
_RETURN_MIN_S = 31 * 60
_RETURN_MEDIAN_S = 40 * 60
_RETURN_MAX_S = 6 * 3600


@dataclass(frozen=True, slots=True)
class TrafficConfig:
    """What to generate; times are seconds of event time after ``start``.

    ``max_events`` counts every message, malformed ones included; ``spike`` is the
    (start, end) window in which sessions' purchase decisions are scaled by
    ``spike_purchase_factor`` (the abandonment-spike scenario).
    """

    events_per_s: float = 50.0
    max_events: int | None = None
    duration_s: float | None = None
    malformed_ratio: float = 0.0
    spike: tuple[float, float] | None = None
    spike_purchase_factor: float = 0.1

    def __post_init__(self) -> None:
        """Reject impossible values early, naming the option."""
        if self.events_per_s <= 0:
            raise ValueError("events_per_s must be greater than zero")
        if not 0.0 <= self.malformed_ratio < 1.0:
            raise ValueError("malformed_ratio must be in [0, 1)")


@dataclass(slots=True)
class GeneratedMessage:
    """One Kafka message: a valid event, a malformed event dict, or raw broken bytes."""

    key: str
    ts_ms: int
    kind: str  # "valid" or one of malformed.MALFORMED_KINDS
    event: Event | None = None
    raw: bytes | None = None


@dataclass(slots=True)
class TrafficStats:
    """Running totals of a generation run."""

    events: int = 0
    malformed: int = 0
    sessions: int = 0


class TimestampFormat:
    """RFC 3339 UTC timestamps with milliseconds, formatting each second only once."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        """Start with an empty one-second cache (events come in time order)."""
        self._second = -1
        self._prefix = ""

    def __call__(self, ts_ms: int) -> str:
        """``ts_ms`` (epoch milliseconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
        second, millis = divmod(ts_ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{millis:03d}Z"


_PERSONA_CUM = list(accumulate(p.weight for p in PERSONAS))
_DEVICE_CUM = list(accumulate(row[-1] for row in DEVICES))
_LOCALE_CUM = list(accumulate(row[-1] for row in LOCALES))


class TrafficModel:
    """Iterates the messages of one run; ``stats`` is updated as they are produced."""

    def __init__(self, config: TrafficConfig, rng: random.Random, start: datetime) -> None:
        """A run of ``config`` drawing from ``rng``, with event time beginning at ``start``."""
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self.config = config
        self.rng = rng
        self.start_ms = int(start.timestamp() * 1000)
        self.stats = TrafficStats()
        self._store = Store.of(build_catalog())
        self._format = TimestampFormat()
        # Valid events get ids "<run prefix><send counter>": unique within a run by the
        # counter and across runs by the 96 random prefix bits, and cheap to make.
        run = f"{rng.getrandbits(96):024x}"
        self._id_prefix = f"{run[:8]}-{run[8:12]}-{run[12:16]}-{run[16:20]}-{run[20:24]}"
        self._visitors = 0
        # Running means size the arrival rate to the wanted event rate; they start from
        # a prior close to what the personas produce.
        self._planned_events = 15.0 * 50
        self._planned_sessions = 50.0
        self._sessions_per_visitor = sum(p.weight * sum(p.sessions) / 2 for p in PERSONAS) / sum(
            p.weight for p in PERSONAS
        )
        if config.spike is not None:
            low, high = config.spike
            self._spike_ms = (self.start_ms + int(low * 1000), self.start_ms + int(high * 1000))
        else:
            self._spike_ms = (0, -1)

    # --- visitors and sessions ---------------------------------------------------------

    def _spawn(self, at_ms: int) -> Visitor:
        rng = self.rng
        persona: Persona = rng.choices(PERSONAS, cum_weights=_PERSONA_CUM)[0]
        device_type, user_agent, _ = rng.choices(DEVICES, cum_weights=_DEVICE_CUM)[0]
        locale, _ = rng.choices(LOCALES, cum_weights=_LOCALE_CUM)[0]
        self._visitors += 1
        lo, hi = persona.sessions
        return Visitor(
            seq=self._visitors,
            persona=persona.name,
            anonymous_id=new_id(rng),
            context={"user_agent": user_agent, "locale": locale, "device_type": device_type},
            account_id=f"cust_{rng.randrange(10**9):09d}" if persona.has_account else None,
            logged_in=persona.has_account and rng.random() < 0.5,
            pings=rng.random() < 0.5,
            sends_campaign=rng.random() < 0.5,
            epoch_ms=rng.random() < 0.1,
            sessions_left=rng.randint(lo, hi),
        )

    def _plan_session(self, visitor: Visitor, at_ms: int) -> list[PlannedEvent]:
        visitor.sessions_left -= 1
        in_spike = self._spike_ms[0] <= at_ms < self._spike_ms[1]
        factor = self.config.spike_purchase_factor if in_spike else 1.0
        writer = SessionWriter(self.rng, visitor, at_ms)
        SCRIPTS[visitor.persona](writer, self._store, factor)
        visitor.sessions_done += 1
        self._planned_events += len(writer.events)
        self._planned_sessions += 1
        return writer.events

    def _arrival_gap_ms(self, now_ms: float, first_ms: float, emitted: int) -> float:
        per_visitor = self._planned_events / self._planned_sessions * self._sessions_per_visitor
        visitors_per_s = self.config.events_per_s / per_visitor
        gap = self.rng.expovariate(visitors_per_s) * 1000.0
        # Returning visitors' later sessions land hours after they arrive, so the
        # open-loop estimate undershoots for the first hours of a run; steer on the
        # events actually produced so far (bounded, so it cannot oscillate wildly).
        expected = self.config.events_per_s * (now_ms - first_ms) / 1000.0
        if expected > 1000.0:
            gap *= min(2.0, max(0.5, emitted / expected))
        return gap

    def _return_gap_ms(self) -> int:
        gap = _RETURN_MIN_S + self.rng.lognormvariate(0.0, 1.0) * (_RETURN_MEDIAN_S - _RETURN_MIN_S)
        return int(min(gap, _RETURN_MAX_S) * 1000)

    # --- the run --------------------------------------------------------------------------

    def _timeline(self) -> Iterator[tuple[PlannedEvent, Visitor]]:
        """Every visitor's planned events merged in event-time order, forever."""
        config = self.config
        warmup_s = min(_WARMUP_MAX_S, _WARMUP_MAX_EVENTS / config.events_per_s)
        next_arrival = first_arrival = self.start_ms - warmup_s * 1000.0
        emitted = 0
        # Heap of (time of the visitor's next event, visitor seq, visitor, events, index).
        heap: list[tuple[int, int, Visitor, list[PlannedEvent], int]] = []
        while True:
            while not heap or next_arrival <= heap[0][0]:
                at = int(next_arrival)
                visitor = self._spawn(at)
                events = self._plan_session(visitor, at)
                heapq.heappush(heap, (events[0].ts_ms, visitor.seq, visitor, events, 0))
                next_arrival += self._arrival_gap_ms(next_arrival, first_arrival, emitted)
            _, seq, visitor, events, index = heap[0]
            planned = events[index]
            if index + 1 < len(events):
                heapq.heapreplace(heap, (events[index + 1].ts_ms, seq, visitor, events, index + 1))
            elif visitor.sessions_left > 0:
                nxt = self._plan_session(visitor, planned.ts_ms + self._return_gap_ms())
                heapq.heapreplace(heap, (nxt[0].ts_ms, seq, visitor, nxt, 0))
            else:
                heapq.heappop(heap)
            emitted += 1
            yield planned, visitor

    def __iter__(self) -> Iterator[GeneratedMessage]:
        """The run's messages in event-time order, until ``max_events`` or ``duration_s``."""
        config, rng, stats, fmt = self.config, self.rng, self.stats, self._format
        end_ms = None if config.duration_s is None else self.start_ms + config.duration_s * 1000
        limit = config.max_events
        ratio = config.malformed_ratio
        sent = 0
        for planned, visitor in self._timeline():
            ts = planned.ts_ms
            if ts < self.start_ms:
                continue  # warm-up: the site was busy before we started listening
            if end_ms is not None and ts > end_ms:
                return
            render: Callable[[int], Any] = int if visitor.epoch_ms else fmt
            # Each message slot is malformed with probability ``ratio``, independently,
            # so the malformed share of all messages is binomial(n, ratio).
            while ratio and rng.random() < ratio:
                if limit is not None and sent >= limit:
                    return
                kind = rng.choice(MALFORMED_KINDS)
                broken = malformed(kind, planned.event, ts, rng, render)
                stats.malformed += 1
                sent += 1
                if kind == INVALID_JSON:
                    assert isinstance(broken, bytes)
                    yield GeneratedMessage(visitor.anonymous_id, ts, kind, raw=broken)
                else:
                    assert isinstance(broken, dict)
                    yield GeneratedMessage(visitor.anonymous_id, ts, kind, event=broken)
            if limit is not None and sent >= limit:
                return
            event = planned.event
            event["event_id"] = f"{self._id_prefix}{stats.events:08x}"
            event["timestamp"] = render(ts)
            if planned.first_in_session:
                stats.sessions += 1
            stats.events += 1
            sent += 1
            yield GeneratedMessage(visitor.anonymous_id, ts, VALID, event=event)
