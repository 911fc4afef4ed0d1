"""Customer figures do not depend on arrival order or batching (hypothesis, both backends).

The hand-written fixture is streamed through the sessionizer in a random order, in random
batches, each batch's output written to ClickHouse as the worker writes it (rows, orders,
tombstones of merged and re-identified sessions). With an allowed lateness longer than the
fixture no event is late, so every order must give the hand figures of every period.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from contextlib import closing

import pytest
from customer_fixture import CUSTOMER_FILE, CUSTOMER_KEYS, HAND_FIGURES
from hypothesis import given, settings
from hypothesis import strategies as st
from support import database_url, drop_database, open_server

from streams.clickhouse.backend import ClickHouse
from streams.clickhouse.embedded import EmbeddedBackend
from streams.clickhouse.migrations import apply_migrations
from streams.clickhouse.summary import compute_summary
from streams.clickhouse.writer import ClickHouseWriter
from streams.engine.events import Event
from streams.engine.intake import parse_payload
from streams.engine.sessionizer import SessionConfig, Sessionizer
from streams.engine.stages import StageRules
from streams.summary import parse_instant_ms

pytestmark = pytest.mark.integration

#: Longer than the fixture's three weeks: no arrival order makes an event late.
CONFIG = SessionConfig(allowed_lateness_ms=60 * 86_400_000)
RULES = StageRules.default()


def _events() -> list[Event]:
    events: list[Event] = []
    for line in CUSTOMER_FILE.read_bytes().splitlines():
        result = parse_payload(line, 2_000_000_000_000)
        assert not result.rejections, result.rejections
        events.extend(result.events)
    return events


EVENTS = _events()


def _period(args: tuple[str, ...]) -> tuple[int | None, int | None]:
    """``--from``/``--to`` arguments as the (from_ms, to_ms) of ``compute_summary``."""
    options = dict(zip(args[::2], args[1::2], strict=True))
    start, end = options.get("--from"), options.get("--to")
    return (
        None if start is None else parse_instant_ms(start, "--from"),
        None if end is None else parse_instant_ms(end, "--to"),
    )


@pytest.fixture(scope="module", params=["embedded", "server"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ClickHouse]:
    """A migrated backend kept for the module (hypothesis runs many examples on it)."""
    if request.param == "embedded":
        backend: ClickHouse = EmbeddedBackend(tmp_path_factory.mktemp("arrival") / "clickhouse")
    else:
        url = request.getfixturevalue("module_server_url")
        backend = open_server(url)
    with closing(backend):
        apply_migrations(backend)
        yield backend


@pytest.fixture(scope="module")
def module_server_url() -> Iterator[str]:
    """A fresh database on the test server for this module; dropped afterwards."""
    url = database_url(f"journey_arrival_{uuid.uuid4().hex[:12]}")
    yield url
    drop_database(url)


@settings(max_examples=12, deadline=None)
@given(
    order=st.permutations(range(len(EVENTS))),
    cuts=st.lists(st.integers(0, len(EVENTS)), max_size=5),
)
def test_any_arrival_order_and_batching_gives_the_hand_figures(
    store: ClickHouse, order: list[int], cuts: list[int]
) -> None:
    """Shuffled, split into batches, written batch by batch: the same customer figures."""
    for table in ("sessions", "orders"):
        store.execute(f"TRUNCATE TABLE {table}")
    arrival = [EVENTS[i] for i in order]
    sessionizer = Sessionizer(CONFIG, RULES)
    writer = ClickHouseWriter(store, rollups=False)
    bounds = sorted({0, len(arrival), *cuts})
    outputs = [sessionizer.process(arrival[a:b]) for a, b in itertools.pairwise(bounds)]
    outputs.append(sessionizer.close_all())
    for out in outputs:
        assert not out.late
        writer.write(out.sessions, out.removed_session_ids, out.orders, out.removed_starts)
    for period, hand in HAND_FIGURES.items():
        summary = json.loads(json.dumps(compute_summary(store, *_period(period))))
        assert {key: summary[key] for key in CUSTOMER_KEYS} == hand, period


def test_the_fixture_has_every_event() -> None:
    """The fixture parses to its 27 events (a guard against a silently shortened file)."""
    assert len(EVENTS) == 27
