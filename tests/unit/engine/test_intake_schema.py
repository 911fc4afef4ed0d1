"""The hand-written intake accepts exactly what schemas/event.v1.json accepts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from streams.engine.intake import MAX_TS_MS, parse_payload

SCHEMA = orjson.loads((Path(__file__).parents[3] / "schemas" / "event.v1.json").read_bytes())
VALIDATOR = Draft202012Validator(SCHEMA)
PATTERN = SCHEMA["properties"]["timestamp"]["oneOf"][0]["pattern"]
MISSING = object()

texts = st.one_of(st.text(max_size=12), st.just("x" * 8192), st.just("y" * 8193))
wrong = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-2, 2, allow_nan=False),
                  st.lists(st.integers(-5, 5), max_size=1), st.just({}))  # fmt: skip
numbers = st.one_of(st.integers(-10, 10**6), st.floats(-10, 1e6, allow_nan=False))


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    """A valid RFC 3339 time (after 1970) in one of the accepted spellings."""
    moment = draw(st.datetimes(datetime(1970, 1, 2), datetime(2200, 1, 1)))  # noqa: DTZ001
    offset = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    local = moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(minutes=offset)))
    sep = draw(st.sampled_from("Tt "))
    frac = draw(st.sampled_from(["", ".5", ".123", ".123456789"]))
    zone = draw(st.sampled_from(["Z", "z"])) if offset == 0 else local.strftime("%z")
    if zone[0] in "+-":
        zone = zone[:3] + ":" + zone[3:5]
    return local.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + frac + zone


timestamps = st.one_of(
    rfc3339(),
    st.text(max_size=25).filter(lambda s: re.search(PATTERN, s) is None),
    st.integers(-10, MAX_TS_MS + 10),
    st.sampled_from([0, MAX_TS_MS, MAX_TS_MS + 1, -1, 1.7e12, 1.5]),
    wrong,
)


def maybe(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    """The field's value, or the field left out."""
    return st.one_of(st.just(MISSING), strategy)


def section(fields: dict[str, st.SearchStrategy[object]]) -> st.SearchStrategy[object]:
    """An object with some of ``fields`` (or occasionally not an object at all)."""
    body = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(body, body, wrong)


text_or_int = st.one_of(texts, st.integers(-5, 10**12), st.sampled_from([2.0, 1.5, True]))
events = st.fixed_dictionaries(
    {},
    optional={
        "event_id": st.one_of(texts, wrong),
        "event_type": st.one_of(st.sampled_from(["page_view", "purchase", "custom"]), texts, wrong),
        "timestamp": timestamps,
        "anonymous_id": st.one_of(texts, wrong),
        "user_id": st.one_of(texts, wrong),
        "page": section({k: st.one_of(texts, wrong) for k in ("url", "path", "title", "referrer")}),
        "campaign": section(
            {k: st.one_of(texts, wrong) for k in ("source", "medium", "name", "term", "content")}
        ),
        "properties": section(
            {
                "product_id": text_or_int,
                "order_id": text_or_int,
                "cart_id": text_or_int,
                "category": texts,
                "currency": texts,
                "price": st.one_of(numbers, wrong),
                "revenue": st.one_of(numbers, wrong),
                "quantity": st.one_of(
                    st.integers(-3, 10), st.sampled_from([2.0, 1.5, 2**32 - 1, 2**32, 2**40]), wrong
                ),
                "score": st.one_of(numbers, wrong),
                "scale": st.one_of(st.sampled_from([5, 10, 7, 0, 10.0]), wrong),
            }
        ),
        "context": section(
            {k: st.one_of(texts, wrong) for k in ("user_agent", "locale", "device_type")}
        ),
        "extra": st.one_of(texts, wrong),
    },
)
required_heavy = st.fixed_dictionaries(
    {
        "event_id": st.text(min_size=1, max_size=5),
        "event_type": st.just("page_view"),
        "timestamp": timestamps,
        "anonymous_id": st.one_of(st.just(""), st.just("a")),
    },
).flatmap(lambda base: events.map(lambda extra: {**base, **extra}))


@settings(max_examples=1500, deadline=None)
@given(st.one_of(events, required_heavy))
def test_code_accepts_exactly_what_the_schema_accepts(event: dict[str, object]) -> None:
    """For every schema-expressible rule, intake and jsonschema agree on accept vs reject."""
    result = parse_payload(orjson.dumps(event), now_ms=MAX_TS_MS)
    assert (not result.rejections) == VALIDATOR.is_valid(event), (result.rejections, event)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(events, required_heavy), max_size=5))
def test_batch_elements_agree_with_schema_batch_items(batch: list[dict[str, object]]) -> None:
    """Each batch element is accepted exactly when the schema accepts it as an item."""
    result = parse_payload(orjson.dumps({"batch": batch}), now_ms=MAX_TS_MS)
    rejected = {r.index for r in result.rejections}
    assert [i not in rejected for i in range(len(batch))] == [VALIDATOR.is_valid(e) for e in batch]
