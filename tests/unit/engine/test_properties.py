"""Invariants of the sessionizer over generated traffic (hypothesis)."""

from __future__ import annotations

import itertools
from collections import Counter

from engine_support import MINUTE, T0, apply_outputs, ev
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine.events import Event
from streams.engine.sessionizer import SessionConfig, Sessionizer, sessionize_all
from streams.engine.stages import StageRules

RULES = StageRules.default()
CFG = SessionConfig()
LATENESS = CFG.allowed_lateness_ms

TYPES = ["page_view", "product_view", "page_ping", "search", "add_to_cart", "purchase",
         "email_click", "survey_response", "login", "share"]  # fmt: skip
GAPS = st.one_of(
    st.integers(0, 3),  # ties and near-ties
    st.integers(1, 10 * MINUTE),
    st.sampled_from([30 * MINUTE, 30 * MINUTE + 1, 29 * MINUTE]),
    st.integers(31 * MINUTE, 3 * 60 * MINUTE),
)


@st.composite
def visitor_events(draw: st.DrawFn, visitor: str) -> list[Event]:
    """One visitor's events: varied gaps and types, some repeated event_ids."""
    n = draw(st.integers(1, 14))
    ts = T0 + draw(st.integers(0, 20 * MINUTE))
    out: list[Event] = []
    for i in range(n):
        ts += draw(GAPS)
        etype = draw(st.sampled_from(TYPES))
        fields: dict[str, object] = {}
        if etype == "purchase":
            order = draw(st.sampled_from(["", "o1", "o2"]))
            fields["order_id"] = f"{visitor}-{order}" if order else ""
            fields["revenue"] = float(draw(st.integers(0, 100)))
        if etype == "survey_response":
            fields["scale"] = 10
            fields["score"] = float(draw(st.integers(0, 10)))
        if draw(st.booleans()) and i % 4 == 0:
            fields["user_id"] = "u-" + visitor
        out.append(ev(f"{visitor}-{i:02d}", ts, etype, visitor, **fields))
        if draw(st.integers(0, 9)) == 0:
            out.append(out[-1])  # an exact duplicate (a producer retry)
    return out


@st.composite
def traffic(draw: st.DrawFn) -> list[Event]:
    """Events of one to three visitors, in event-time order."""
    visitors = draw(st.integers(1, 3))
    events = [e for v in range(visitors) for e in draw(visitor_events(f"v{v}"))]
    return sorted(events, key=lambda e: (e.ts_ms, e.event_id))


@st.composite
def arrival_within_lateness(draw: st.DrawFn) -> list[Event]:
    """A shuffled arrival order in which no event is late.

    Each event is delayed by 0..lateness and arrivals are sorted by ts + delay, so an event
    arriving after another is at most ``lateness`` older than it: never below the watermark.
    """
    events = draw(traffic())
    delays = draw(st.lists(st.integers(0, LATENESS), min_size=len(events), max_size=len(events)))
    order = sorted(range(len(events)), key=lambda i: (events[i].ts_ms + delays[i], i))
    return [events[i] for i in order]


def stream(events: list[Event], cuts: list[int] | None = None) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """Process ``events`` in the given order (split at ``cuts``), close all, apply outputs."""
    s = Sessionizer(CFG, RULES)
    bounds = sorted({0, len(events), *(c % (len(events) + 1) for c in (cuts or []))})
    outs = [s.process(events[a:b]) for a, b in itertools.pairwise(bounds)]
    outs.append(s.close_all())
    assert all(not o.late for o in outs)
    return apply_outputs(outs)


@settings(max_examples=150, deadline=None)
@given(traffic())
def test_every_unique_event_in_exactly_one_session(events: list[Event]) -> None:
    """Sum of events over final rows equals the accepted unique events; sessions never overlap."""
    out = sessionize_all(events, CFG, RULES)
    unique = {(e.visitor_key, e.event_id) for e in events}
    assert sum(r.events for r in out.sessions) == len(unique)
    assert out.duplicates == len(events) - len(unique)
    assert all(r.closed == 1 for r in out.sessions)
    by_visitor: dict[str, list[tuple[int, int]]] = {}
    for r in out.sessions:
        by_visitor.setdefault(r.visitor_key, []).append((r.start_ms, r.end_ms))
    for spans in by_visitor.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))


@settings(max_examples=200, deadline=None)
@given(arrival_within_lateness())
def test_result_independent_of_arrival_order_within_lateness(arrival: list[Event]) -> None:
    """Shuffled arrival (nothing late), one event per call, gives the in-order rows exactly."""
    in_order = sorted(arrival, key=lambda e: (e.ts_ms, e.event_id))
    s = Sessionizer(CFG, RULES)
    outs = [s.process([e]) for e in arrival] + [s.close_all()]
    assert apply_outputs(outs) == stream(in_order)


@settings(max_examples=150, deadline=None)
@given(arrival_within_lateness(), st.lists(st.integers(0, 200), max_size=6))
def test_result_independent_of_batching(arrival: list[Event], cuts: list[int]) -> None:
    """Splitting the same arrival sequence into different process() batches changes nothing."""
    assert stream(arrival, cuts) == stream(arrival)


@settings(max_examples=150, deadline=None)
@given(arrival_within_lateness())
def test_streaming_equals_replay(arrival: list[Event]) -> None:
    """Streaming (arrival order, then close_all) equals sessionize_all on the same events."""
    assert stream(arrival) == apply_outputs([sessionize_all(arrival, CFG, RULES)])


@settings(max_examples=100, deadline=None)
@given(traffic())
def test_in_order_transitions_match_replay(events: list[Event]) -> None:
    """In event-time order every session announces the same stages, once each, as in replay."""
    s = Sessionizer(CFG, RULES)
    outs = [s.process([e]) for e in events] + [s.close_all()]
    streamed = Counter((t.kind, t.stage, t.session_id) for o in outs for t in o.transitions)
    replayed = Counter(
        (t.kind, t.stage, t.session_id) for t in sessionize_all(events, CFG, RULES).transitions
    )
    assert streamed == replayed
    assert max(streamed.values(), default=1) == 1
