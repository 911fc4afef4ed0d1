"""Edge cases of session cutting, lateness, merging and per-session figures (SPEC 4 and 5)."""

from __future__ import annotations

from engine_support import HOUR, MINUTE, SECOND, T0, apply_outputs, ev

from streams.engine.events import Event
from streams.engine.sessionizer import SessionConfig, Sessionizer, sessionize_all
from streams.engine.stages import StageRules
from streams.engine.summary import session_id
from streams.settings import Settings

RULES = StageRules.default()
CFG = SessionConfig()


def replay(*events):  # type: ignore[no-untyped-def]
    """Final rows of a replay, sorted by start time."""
    out = sessionize_all(events, CFG, RULES)
    return sorted(out.sessions, key=lambda r: r.start_ms)


def test_gap_of_exactly_timeout_stays_in_session() -> None:
    """A gap of exactly 30 minutes does not start a new session."""
    rows = replay(ev("a", T0), ev("b", T0 + 30 * MINUTE))
    assert [r.events for r in rows] == [2]


def test_gap_one_ms_over_timeout_starts_new_session() -> None:
    """A gap of 30 minutes + 1 ms starts a new session."""
    rows = replay(ev("a", T0), ev("b", T0 + 30 * MINUTE + 1))
    assert [r.events for r in rows] == [1, 1]
    assert [r.returning for r in rows] == [0, 1]


def test_max_session_length_exactly_24h_stays() -> None:
    """An event exactly 24 h after the session's first event stays in the session."""
    events = [ev(f"e{i:03d}", T0 + i * 20 * MINUTE) for i in range(73)]  # 0 .. 24 h
    assert [r.events for r in replay(*events)] == [73]


def test_max_session_length_over_24h_splits() -> None:
    """An event more than 24 h after the session's first event starts a new session."""
    events = [ev(f"e{i:03d}", T0 + i * 20 * MINUTE) for i in range(73)]
    events.append(ev("late", T0 + 24 * HOUR + 1))
    rows = replay(*events)
    assert [r.events for r in rows] == [73, 1]
    assert rows[1].start_ms == T0 + 24 * HOUR + 1


def test_duplicates_dropped_and_counted() -> None:
    """A repeated event_id is dropped and counted, in replay and in streaming."""
    events = [ev("a", T0), ev("a", T0), ev("b", T0 + SECOND), ev("b", T0 + SECOND)]
    out = sessionize_all(events, CFG, RULES)
    assert out.duplicates == 2
    assert out.sessions[0].events == 2
    s = Sessionizer(CFG, RULES)
    first = s.process(events[:3])
    second = s.process(events[3:])
    assert (first.duplicates, second.duplicates) == (1, 1)


def test_ties_in_time_ordered_by_event_id() -> None:
    """Events with equal time are ordered by event_id, so the first page is the smaller id."""
    rows = replay(ev("b", T0, page_path="/b"), ev("a", T0, page_path="/a"))
    assert rows[0].landing_page == "/a"
    assert rows[0].exit_page == "/b"
    assert rows[0].session_id == session_id("v1", T0, "a")


def test_dwell_ignores_ties_and_waits_for_strictly_later_event() -> None:
    """Time on page runs to the next event with a strictly later timestamp."""
    rows = replay(
        ev("a", T0),
        ev("b", T0, "search"),  # tie: does not end page a's dwell
        ev("c", T0 + 5 * SECOND),  # ends a (5 s); c ends at d (7 s)
        ev("d", T0 + 12 * SECOND, "add_to_cart"),
        ev("e", T0 + 12 * SECOND),  # last page view: no later event, no dwell
    )
    row = rows[0]
    assert (row.dwell_sum_ms, row.dwell_count) == (5000 + 7000, 2)
    assert (row.page_views, row.interactions) == (3, 2)


def test_session_without_page_views() -> None:
    """A session of interactions only has landing page "" and is not a bounce."""
    rows = replay(ev("a", T0, "search"), ev("b", T0 + SECOND, "login"))
    row = rows[0]
    assert (row.landing_page, row.exit_page, row.bounced, row.page_views) == ("", "", 0, 0)


def test_single_page_view_is_bounce_and_not_engaged() -> None:
    """One page view and nothing else is a bounce; engaged needs 10 s, 2 views or a purchase."""
    bounce = replay(ev("a", T0))[0]
    assert (bounce.bounced, bounce.engaged, bounce.duration_ms) == (1, 0, 0)
    ten = replay(ev("a", T0, "search"), ev("b", T0 + 10 * SECOND, "search"))[0]
    assert (ten.engaged, ten.bounced) == (1, 0)


def test_lateness_exactly_at_watermark_is_accepted() -> None:
    """An event exactly at the watermark (max time - 10 min) is accepted and merged."""
    s = Sessionizer(CFG, RULES)
    s.process([ev("b", T0 + 10 * MINUTE)])
    out = s.process([ev("a", T0)])
    assert out.late == []
    assert out.sessions[0].events == 2


def test_lateness_one_ms_below_watermark_is_late() -> None:
    """An event 1 ms below the watermark is late: returned, counted, never merged."""
    s = Sessionizer(CFG, RULES)
    s.process([ev("b", T0 + 10 * MINUTE + 1)])
    late = ev("a", T0)
    out = s.process([late])
    assert out.late == [late]
    assert out.sessions == []


def test_gap_filling_event_merges_two_open_sessions() -> None:
    """An event filling the gap between two open sessions merges them; the later id is removed."""
    s = Sessionizer(SessionConfig(allowed_lateness_ms=HOUR), RULES)
    first = s.process([ev("a", T0), ev("c", T0 + 50 * MINUTE)])
    assert len(first.sessions) == 2
    later_id = session_id("v1", T0 + 50 * MINUTE, "c")
    out = s.process([ev("b", T0 + 25 * MINUTE)])
    assert out.removed_session_ids == [later_id]
    assert out.removed_starts == {later_id: T0 + 50 * MINUTE}
    assert [r.events for r in out.sessions] == [3]
    assert out.sessions[0].session_id == session_id("v1", T0, "a")


def test_event_before_first_event_renames_session() -> None:
    """An event earlier than a session's first event gives it a new id; the old id is removed."""
    s = Sessionizer(CFG, RULES)
    s.process([ev("b", T0 + 5 * MINUTE)])
    out = s.process([ev("a", T0)])
    old_id = session_id("v1", T0 + 5 * MINUTE, "b")
    assert out.removed_session_ids == [old_id]
    assert out.removed_starts == {old_id: T0 + 5 * MINUTE}
    assert out.sessions[0].session_id == session_id("v1", T0, "a")
    assert out.sessions[0].landing_page == "/a"


def test_session_closes_when_watermark_passes_last_event_plus_timeout() -> None:
    """A session's final row (closed=1) is emitted once the watermark passes last + 30 min."""
    s = Sessionizer(CFG, RULES)
    s.process([ev("a", T0, visitor="x")])
    # watermark = T0 + 40 min - 10 min = last + timeout: not yet passed
    out = s.process([ev("b", T0 + 40 * MINUTE, visitor="y")])
    assert out.closed == 0
    out = s.process([ev("c", T0 + 40 * MINUTE + 1, visitor="y")])
    assert out.closed == 1
    assert [(r.visitor_key, r.closed) for r in out.sessions if r.closed] == [("x", 1)]


def test_idle_clock_advances_watermark_and_closes() -> None:
    """With no events for the idle grace, the wall clock moves the watermark and closes sessions."""
    cfg = SessionConfig(idle_grace_ms=MINUTE)
    s = Sessionizer(cfg, RULES)
    s.process([ev("a", T0)], now_ms=T0)
    assert s.advance(T0 + 30 * SECOND).closed == 0  # not idle long enough yet
    # now - lateness - grace must exceed T0 + 30 min: now > T0 + 41 min
    assert s.advance(T0 + 41 * MINUTE).closed == 0
    out = s.advance(T0 + 41 * MINUTE + 1)
    assert out.closed == 1
    assert s.advance(T0).watermark_ms == T0 + 30 * MINUTE + 1  # never goes backwards


def test_retention_from_purchase_in_earlier_session() -> None:
    """A session after a session with a purchase is a retention session; the first is not."""
    rows = replay(ev("a", T0, "purchase", order_id="o1", revenue=10.0), ev("b", T0 + 2 * HOUR))
    assert [r.retention for r in rows] == [0, 1]
    assert [r.converted for r in rows] == [1, 0]


def test_retention_from_email_click_of_known_customer() -> None:
    """An email_click carrying a user_id marks retention; without a user_id it does not."""
    known = replay(ev("a", T0, "email_click", user_id="u1"))[0]
    anon = replay(ev("a", T0, "email_click"))[0]
    assert (known.retention, anon.retention) == (1, 0)


def test_advocacy_nps_promoter_only() -> None:
    """A survey_response on scale 10 with score 9 is advocacy; score 8 is not."""
    promoter = replay(ev("a", T0, "survey_response", score=9.0, scale=10))[0]
    passive = replay(ev("a", T0, "survey_response", score=8.0, scale=10))[0]
    assert (promoter.advocacy, passive.advocacy) == (1, 0)
    assert (promoter.nps_responses, promoter.nps_promoters, promoter.nps_detractors) == (1, 1, 0)


def test_csat_counts() -> None:
    """CSAT counts 1-5 responses and the satisfied ones (score >= 4)."""
    row = replay(
        ev("a", T0, "survey_response", score=4.0, scale=5),
        ev("b", T0 + 1, "survey_response", score=3.0, scale=5),
    )[0]
    assert (row.csat_responses, row.csat_satisfied) == (2, 1)


def test_orders_distinct_and_earliest_revenue() -> None:
    """Orders are distinct order ids at the earliest event's revenue; no order id: own order."""
    out = sessionize_all(
        [
            ev("p1", T0, "purchase", order_id="o1", revenue=30.0),
            ev("p2", T0 + SECOND, "purchase", order_id="o1", revenue=99.0),
            ev("p3", T0 + 2 * SECOND, "purchase", revenue=5.0),
        ],
        CFG,
        RULES,
    )
    row = out.sessions[0]
    assert (row.purchases, row.orders, row.revenue) == (3, 2, 35.0)
    assert sorted((o.order_key, o.revenue) for o in out.orders) == [("event:p3", 5.0), ("o1", 30.0)]


def test_cart_abandoned_on_close_with_items() -> None:
    """A session with add_to_cart and no purchase emits cart_abandoned with its items on close."""
    out = sessionize_all(
        [ev("a", T0, "add_to_cart", product_id="sku1", price=2.5, quantity=2)], CFG, RULES
    )
    abandoned = [t for t in out.transitions if t.kind == "cart_abandoned"]
    assert [t.cart for t in abandoned] == [(("sku1", 2, 2.5),)]
    assert out.sessions[0].cart_value == 5.0


def test_stage_transitions_announced_once_in_real_time() -> None:
    """Stage transitions are emitted when first reached, and never again for that session."""
    s = Sessionizer(CFG, RULES)
    first = s.process([ev("a", T0), ev("b", T0 + SECOND, "product_view")])
    assert [t.stage for t in first.transitions] == ["awareness", "consideration"]
    second = s.process([ev("c", T0 + 2 * SECOND, "search"), ev("d", T0 + 3 * SECOND, "purchase")])
    assert [(t.stage, t.from_stage) for t in second.transitions] == [
        ("purchase", "consideration"),
        ("converted", "purchase"),
    ]


def test_identity_stitching_uses_user_id_from_earlier_session() -> None:
    """A session after a login carries the visitor's user_id as customer_key."""
    rows = replay(ev("a", T0, "login", user_id="u7"), ev("b", T0 + 2 * HOUR))
    assert [(r.user_id, r.customer_key) for r in rows] == [("u7", "u7"), ("u7", "u7")]


def test_identity_link_is_the_earliest_event_with_both_ids() -> None:
    """A session's link: first (time, then event_id) event with anonymous_id and user_id."""
    (row,) = replay(
        ev("a", T0),
        ev("c", T0 + MINUTE, "login", user_id="u2"),
        ev("b", T0 + MINUTE, "page_view", user_id="u1"),  # same time, smaller id: first
        ev("d", T0 + 2 * MINUTE, "page_view", user_id="u3"),
    )
    assert (row.link_user_id, row.link_ms, row.link_event_id) == ("u1", T0 + MINUTE, "b")
    (anonymous,) = replay(ev("x", T0, visitor="v2"))
    assert (anonymous.link_user_id, anonymous.link_ms, anonymous.link_event_id) == ("", 0, "")


def test_an_event_without_anonymous_id_is_no_link() -> None:
    """A user_id-only event keyed by that user_id links nothing: the visitor key is the user."""
    known = Event("k", "page_view", T0, "u9", user_id="u9")
    (row,) = sessionize_all([known], CFG, RULES).sessions
    assert (row.visitor_key, row.anonymous_id, row.link_user_id) == ("u9", "", "")


def test_a_late_earlier_login_moves_the_link() -> None:
    """An earlier link event arriving later (within lateness) becomes the session's link."""
    s = Sessionizer(CFG, RULES)
    outs = [s.process([ev("a", T0 + 2 * MINUTE, user_id="u1")])]
    outs.append(s.process([ev("b", T0 + MINUTE, "login", user_id="u2")]))
    outs.append(s.close_all())
    (row,) = apply_outputs(outs)[0].values()
    assert (row.link_user_id, row.link_event_id) == ("u2", "b")


def test_purchase_times_are_the_first_and_last_purchase_events() -> None:
    """first/last_purchase_ms span the session's purchase events; 0 without one."""
    buy, rest = replay(
        ev("a", T0),
        ev("b", T0 + MINUTE, "purchase", order_id="o1"),
        ev("c", T0 + 2 * MINUTE, "add_to_cart"),
        ev("d", T0 + 3 * MINUTE, "purchase", order_id="o2"),
        ev("e", T0 + 2 * HOUR),
    )
    assert (buy.first_purchase_ms, buy.last_purchase_ms) == (T0 + MINUTE, T0 + 3 * MINUTE)
    assert (rest.first_purchase_ms, rest.last_purchase_ms) == (0, 0)


def test_split_on_campaign_change_is_optional() -> None:
    """With split_on_campaign a new campaign starts a new session; by default it does not."""
    events = [
        ev("a", T0, campaign_source="google", campaign_medium="cpc"),
        ev("b", T0 + MINUTE, campaign_source="newsletter", campaign_medium="email"),
    ]
    assert len(sessionize_all(events, CFG, RULES).sessions) == 1
    split = sessionize_all(events, SessionConfig(split_on_campaign=True), RULES).sessions
    assert sorted(r.channel for r in split) == ["Email", "Paid Search"]


def test_config_from_settings_maps_seconds_to_ms() -> None:
    """Settings.session_config converts the JOURNEY_* seconds into milliseconds."""
    cfg = Settings(session_timeout_s=60.0, allowed_lateness_s=5.0).session_config()
    assert (cfg.session_timeout_ms, cfg.allowed_lateness_ms, cfg.max_session_ms) == (
        60_000,
        5_000,
        86_400_000,
    )


def test_rebuilds_deadlines_from_a_handed_store() -> None:
    """A new sessionizer over an existing store closes the sessions held in it."""
    store: dict = {}  # type: ignore[type-arg]
    Sessionizer(CFG, RULES, store).process([ev("a", T0)])
    restarted = Sessionizer(CFG, RULES, store)
    out = restarted.process([ev("z", T0 + 2 * HOUR, visitor="other")])
    assert [r.visitor_key for r in out.sessions if r.closed] == ["v1"]


def test_deadline_heap_holds_about_one_entry_per_visitor() -> None:
    """Events that extend a session queue no deadline; sessions still close on time.

    One hour of lateness, so that an event out of order can open an earlier session.
    Visitors a and b: 500 events each, one per minute in order (one session each).
    Visitor d: an event at the end, then one 45 minutes before it, a session of its own
    whose deadline comes earlier and needs an entry of its own. Every session closes when
    the watermark passes its last event plus the timeout, not at an earlier queued entry.
    """
    cfg = SessionConfig(allowed_lateness_ms=HOUR)
    timeout, lateness = cfg.session_timeout_ms, cfg.allowed_lateness_ms
    s = Sessionizer(cfg, RULES)
    for i in range(500):
        s.process([ev(f"a{i:03d}", T0 + i * MINUTE, visitor="a"),
                   ev(f"b{i:03d}", T0 + i * MINUTE, visitor="b")])  # fmt: skip
        assert len(s._deadlines) <= 2
    last = T0 + 499 * MINUTE
    s.process([ev("d1", last, visitor="d")])
    out = s.process([ev("d0", last - 45 * MINUTE, visitor="d")])
    # Both rows change (the later session now has one before it), and both stay open.
    assert sorted((r.start_ms, r.closed) for r in out.sessions) == [
        (last - 45 * MINUTE, 0), (last, 0)
    ]  # fmt: skip
    assert len(s._deadlines) == 4

    def closed_by(max_ts: int, eid: str) -> list[tuple[str, int, int]]:
        """Sessions closed once event time reaches ``max_ts`` (visitor c's events)."""
        rows = s.process([ev(eid, max_ts, visitor="c")]).sessions
        return sorted((r.visitor_key, r.start_ms, r.events) for r in rows if r.closed)

    early_deadline = last - 45 * MINUTE + timeout
    assert closed_by(early_deadline + lateness, "c0") == []
    assert closed_by(early_deadline + lateness + 1, "c1") == [("d", last - 45 * MINUTE, 1)]
    deadline = last + timeout  # a's, b's and d's other session
    assert closed_by(deadline + lateness, "c2") == []
    assert closed_by(deadline + lateness + 1, "c3") == [
        ("a", T0, 500), ("b", T0, 500), ("d", last, 1)
    ]  # fmt: skip
    assert len(s._deadlines) <= 2  # visitor c's open session (and perhaps a stale entry)


def test_streaming_out_of_order_equals_replay() -> None:
    """Out-of-order arrival within the lateness gives exactly the replay's rows."""
    events = [ev(f"e{i}", T0 + i * 4 * MINUTE, "product_view" if i % 3 else "page_view")
              for i in range(10)]  # fmt: skip
    order = [1, 0, 3, 2, 5, 4, 7, 6, 9, 8]  # each at most 8 min behind the newest
    s = Sessionizer(CFG, RULES)
    outs = [s.process([events[i]]) for i in order] + [s.close_all()]
    assert apply_outputs(outs) == apply_outputs([sessionize_all(events, CFG, RULES)])


def test_engine_imports_no_adapter() -> None:
    """The engine is pure: importing all of it loads no settings, Kafka, ClickHouse or metrics."""
    import subprocess
    import sys

    adapters = (
        "streams.settings",
        "streams.worker",
        "streams.clickhouse",
        "streams.metrics",
        "faust",
        "aiokafka",
        "kafka",
        "clickhouse_driver",
        "chdb",
        "prometheus_client",
    )
    code = (
        "import sys, pkgutil, importlib, streams.engine as e\n"
        "for m in pkgutil.iter_modules(e.__path__):\n"
        "    importlib.import_module('streams.engine.' + m.name)\n"
        f"bad = {adapters!r}\n"
        "print(sorted(n for n in sys.modules if any(n == b or n.startswith(b + '.') for b in bad)))"
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
