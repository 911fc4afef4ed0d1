"""Intake fast paths: each gives exactly what the reference path gives, or defers to it."""

from __future__ import annotations

import dataclasses
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_intake_schema import events, required_heavy

from streams.engine import intake
from streams.engine.events import Event, new_event
from streams.engine.intake import (
    MAX_TS_MS,
    InvalidEvent,
    parse_event_dict,
    parse_payload,
    parse_timestamp,
)

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
DAY = 86_400_000

REALISTIC: dict[str, Any] = {
    "event_id": "2da1f12c-cf35-dbb1-925a-1e9600000004",
    "event_type": "product_view",
    "timestamp": "2023-11-14T22:13:20.097Z",
    "anonymous_id": "982a4ef4-4801-3086-e4bf-fd92731866d4",
    "user_id": "u-17",
    "page": {
        "url": "https://shop.example.com/p/sku-10183?utm_source=news&utm_medium=email",
        "title": "Premium Backpack 183",
        "referrer": "https://www.google.com/",
    },
    "properties": {"product_id": 10183, "category": "bags", "price": 53, "currency": "EUR"},
    "context": {"user_agent": "Mozilla/5.0 (iPhone)", "locale": "fr-FR", "device_type": "mobile"},
}


def reference_timestamp(value: object) -> int | None:
    """parse_timestamp with its slicing fast path switched off (None when it rejects)."""
    with mock.patch.object(intake, "_utc_timestamp", return_value=-1):
        try:
            return parse_timestamp(value)
        except InvalidEvent:
            return None


def reference_event(obj: dict[str, Any]) -> Event | str:
    """What the reference ``_build`` makes of ``obj``: the event or the rejection reason."""
    try:
        return intake._build(obj, NOW)
    except InvalidEvent as exc:
        return exc.reason


def typed(event: Event) -> list[tuple[type, object]]:
    """Every field with its type, so 3 and 3.0 (or "7" and 7) count as different."""
    return [(type(value), value) for value in dataclasses.astuple(event)]


@pytest.mark.parametrize(
    "text",
    [
        "2023-11-14T22:13:20Z",
        "2023-11-14T22:13:20.097Z",
        "2023-11-14t22:13:20.097z",
        "2023-11-14 22:13:20.097Z",
        "2023-11-14T22:13:20+00:00",
        "2023-11-14T22:13:20-00:00",
        "2023-11-14T22:13:20.097+00:00",
        "2023-11-14T22:13:20.5Z",
        "2023-11-14T22:13:20.123456Z",
        "2023-11-15T00:13:20+02:00",
        "2016-12-31T23:59:60Z",
        "2024-02-29T00:00:00.000Z",
        "2000-02-29T12:00:00Z",
        "1970-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
    ],
)
def test_valid_timestamps_agree_with_the_regex_path(text: str) -> None:
    """Fraction or none, zero offsets, lowercase t/z, a space and leap seconds parse alike."""
    expected = reference_timestamp(text)
    assert expected is not None
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-29T00:00:00.000Z",  # not a leap year
        "1900-02-29T00:00:00Z",  # century, not a leap year
        "2023-04-31T00:00:00Z",
        "2023-13-01T00:00:00Z",
        "2023-00-10T00:00:00Z",
        "2023-11-00T00:00:00Z",
        "2023-11-14T24:00:00Z",
        "2023-11-14T22:60:00Z",
        "2023-11-14T22:13:61Z",
        "2023-11-14T22:13:61.000Z",
        "2023-11-14X22:13:20Z",
        "2023-11-14T22-13:20Z",
        "2023-11-14T22:13-20Z",
        "2023-11-14T22:13:20,097Z",
        "2023-11-14T22:13:20.09xZ",
        "2023-11-14T22:13:2٣.097Z",  # an Arabic-Indic digit: int() reads it, the regex not
        "٢023-11-14T22:13:20Z",
        "2023-11-14T22:13:20.097",
        "2023-11-14T22:13:20+00:0x",
        "2023-11-14T22:13:20.097+0000",
        "1969-12-31T23:59:59.999Z",
        "9999-12-31T23:59:60Z",  # past the schema's maximum
    ],
)
def test_invalid_timestamps_still_rejected(text: str) -> None:
    """Impossible dates, bad separators, non-ASCII digits and out-of-range times are rejected."""
    assert reference_timestamp(text) is None
    with pytest.raises(InvalidEvent):
        parse_timestamp(text)


@settings(max_examples=400, deadline=None)
@given(
    st.from_regex(
        r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{3})?"
        r"([Zz]|[+-]00:00)\Z"
    )
)
def test_fast_timestamp_shapes_match_the_regex_path(text: str) -> None:
    """For every string of the sliced shapes, the fast path equals the regex path."""
    expected = reference_timestamp(text)
    if expected is None:
        with pytest.raises(InvalidEvent):
            parse_timestamp(text)
    else:
        assert parse_timestamp(text) == expected
    fast = intake._utc_timestamp(text)
    assert fast == -1 or fast == expected


def test_minute_memo_is_bounded_and_still_exact() -> None:
    """Filling the minute memo past its bound clears it and later answers stay exact."""
    for minute in range(intake._CACHE_SIZE + 5):
        hour, mins = divmod(minute, 60)
        day, hour = divmod(hour, 24)
        text = f"2023-01-{day + 1:02d}T{hour:02d}:{mins:02d}:07.250Z"
        assert parse_timestamp(text) == reference_timestamp(text)
    assert len(intake._MINUTE_MS) <= intake._CACHE_SIZE


def test_realistic_event_takes_the_fast_path_and_matches() -> None:
    """A typical event is built by the fast path, field for field (and type) as _build does."""
    fast = intake._fast_build(REALISTIC, NOW, True)
    assert fast is not None
    reference = reference_event(REALISTIC)
    assert isinstance(reference, Event)
    assert typed(fast) == typed(reference)
    assert (fast.campaign_source, fast.product_id, fast.price) == ("news", "10183", 53.0)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(events, required_heavy), st.booleans())
def test_fast_build_accepts_only_what_build_accepts_identically(
    event: dict[str, Any], check_lengths: bool
) -> None:
    """Whenever the fast path returns an event, _build returns the same one; else it defers."""
    if not check_lengths and len(orjson.dumps(event)) > intake.MAX_STRING_CHARS:
        check_lengths = True  # parse_payload skips lengths only for messages this small
    fast = intake._fast_build(event, NOW, check_lengths)
    if fast is not None:
        reference = reference_event(event)
        assert isinstance(reference, Event), reference
        assert typed(fast) == typed(reference)


@pytest.mark.parametrize(
    ("page", "campaign", "expected"),
    [
        ({"url": "https://s.example/?utm_source=x&utm_medium=cpc"}, None, ("x", "cpc")),
        ({"url": "https://s.example/?utm_source=x"}, {"source": "fb"}, ("fb", "")),
        ({"url": "https://s.example/?ut\tm_source=x"}, None, ("x", "")),  # urlsplit drops tabs
        ({"url": "https://s.example/?gclid=1"}, None, ("google", "cpc")),
        ({"url": "https://s.example/p?q=utm_"}, None, ("", "")),
        ({"url": "https://s.example/p"}, None, ("", "")),
        ({"url": "http://[::1/?utm_source=x"}, None, ("", "")),  # unparsable URL
        ({"path": "/p?utm_source=x"}, None, ("", "")),
    ],
)
def test_utm_with_and_without_campaign(
    page: dict[str, str], campaign: dict[str, str] | None, expected: tuple[str, str]
) -> None:
    """utm_* (or an ad click id) fill the campaign only when no campaign object is sent."""
    event: dict[str, Any] = {"event_id": "e", "event_type": "page_view", "timestamp": NOW,
                             "anonymous_id": "a", "page": page}  # fmt: skip
    if campaign is not None:
        event["campaign"] = campaign
    for _ in range(2):  # the second time from the URL memo
        (parsed,) = parse_payload(orjson.dumps(event), NOW).events
        assert (parsed.campaign_source, parsed.campaign_medium) == expected
        reference = reference_event(event)
        assert isinstance(reference, Event)
        assert typed(parsed) == typed(reference)


@pytest.mark.parametrize(
    ("url", "referrer", "path", "kept_referrer"),
    [
        ("https://Shop.Example/p/1", "https://shop.example/", "/p/1", ""),
        ("https://shop.example", "https://www.google.com/", "/", "https://www.google.com/"),
        ("http://[::1/p", "http://[::1/q", "", "http://[::1/q"),
        ("/relative", "not a url", "/relative", ""),
    ],
)
def test_path_and_referrer_from_the_url_memo(
    url: str, referrer: str, path: str, kept_referrer: str
) -> None:
    """Path comes from the URL, and a same-host referrer (by the memoised host) is blanked."""
    event = {"event_id": "e", "event_type": "page_view", "timestamp": NOW, "anonymous_id": "a",
             "page": {"url": url, "referrer": referrer}}  # fmt: skip
    for _ in range(2):
        parsed = parse_event_dict(event, NOW)
        assert (parsed.page_path, parsed.referrer) == (path, kept_referrer)


def test_url_memo_is_bounded() -> None:
    """Distinct URLs past the bound clear the memo; long URLs are never memoised."""
    for index in range(intake._CACHE_SIZE + 5):
        intake._url_info(f"https://s.example/{index}")
    assert len(intake._URL_INFO) <= intake._CACHE_SIZE
    long_url = "https://s.example/" + "x" * intake._CACHE_KEY_CHARS
    assert intake._url_info(long_url)[1].startswith("/x")
    assert long_url not in intake._URL_INFO


def nested(levels: int) -> object:
    """A value nested ``levels`` deep (a list of lists around a scalar)."""
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def test_depth_exactly_32_accepted_33_rejected() -> None:
    """A single event at depth 32 passes, 33 is too_deep, via payload and parse_event_dict."""
    ok = {"event_id": "e", "event_type": "t", "timestamp": NOW, "anonymous_id": "a",
          "x": nested(31)}  # fmt: skip
    deep = {**ok, "x": nested(32)}
    assert parse_payload(orjson.dumps(ok), NOW).rejections == []
    assert [r.reason for r in parse_payload(orjson.dumps(deep), NOW).rejections] == ["too_deep"]
    assert parse_event_dict(ok, NOW).event_id == "e"
    with pytest.raises(InvalidEvent, match="too_deep"):
        parse_event_dict(deep, NOW)


def test_batch_element_depth_30_accepted_31_rejected() -> None:
    """In a batch the envelope adds two levels: an element may be 30 deep, not 31."""
    ok = {"event_id": "e", "event_type": "t", "timestamp": NOW, "anonymous_id": "a",
          "x": nested(29)}  # fmt: skip
    deep = {**ok, "x": nested(30)}
    result = parse_payload(orjson.dumps({"batch": [ok, deep, ok]}), NOW)
    assert len(result.events) == 2
    assert [(r.reason, r.index) for r in result.rejections] == [("too_deep", 1)]


def test_two_level_proof_is_conservative() -> None:
    """The cheap depth proof says yes only for flat sections, never for subclasses."""

    class Sub(dict[str, object]):
        """A dict subclass, which the exact-type test must not take for a scalar."""

    assert intake._within_two_levels({"a": 1, "p": {"u": "x", "n": None}, "l": [1, 2.5]})
    assert not intake._within_two_levels({"p": {"q": {}}})
    assert not intake._within_two_levels({"l": [[1]]})
    assert not intake._within_two_levels({"p": Sub()})
    assert not intake._within_two_levels({"p": {"q": Sub()}})


def test_long_strings_checked_when_the_message_is_large() -> None:
    """A too-long string is rejected alone and in a batch, where lengths must be checked."""
    referrer = "https://x.example/" + "r" * 8192
    event = {"event_id": "e", "event_type": "t", "timestamp": NOW, "anonymous_id": "a",
             "page": {"referrer": referrer, "url": "https://x.example/"}}  # fmt: skip
    assert [r.reason for r in parse_payload(orjson.dumps(event), NOW).rejections] == [
        "field_too_long:page.referrer"
    ]
    batch = orjson.dumps({"batch": [event, {**event, "page": {}}]})
    assert [(r.reason, r.index) for r in parse_payload(batch, NOW).rejections] == [
        ("field_too_long:page.referrer", 0)
    ]
    with pytest.raises(InvalidEvent, match=r"field_too_long:properties\.category"):
        parse_event_dict({**event, "page": {}, "properties": {"category": "c" * 8193}}, NOW)


@pytest.mark.parametrize(
    ("props", "reason"),
    [
        ({"price": None}, "bad_field:properties.price"),
        ({"quantity": None}, "bad_field:properties.quantity"),
        ({"scale": None}, "bad_field:properties.scale"),
        ({"score": "1"}, "bad_field:properties.score"),
        ({"revenue": -1.0}, "negative_revenue"),
        ({"product_id": None}, "bad_field:properties.product_id"),
        ({"cart_id": True}, "bad_field:properties.cart_id"),
    ],
)
def test_null_and_wrong_properties_defer_to_the_reference(
    props: dict[str, object], reason: str
) -> None:
    """A JSON null is not an absent property: the fast path defers and _build rejects it."""
    event = {"event_id": "e", "event_type": "t", "timestamp": NOW, "anonymous_id": "a",
             "properties": props}  # fmt: skip
    assert intake._fast_build(event, NOW, True) is None
    assert [r.reason for r in parse_payload(orjson.dumps(event), NOW).rejections] == [reason]


def test_integer_valued_floats_still_accepted() -> None:
    """Float ids, quantities and timestamps JSON Schema calls integers go the reference way."""
    event = {"event_id": "e", "event_type": "t", "timestamp": 1.7e12, "anonymous_id": "a",
             "properties": {"order_id": 7.0, "quantity": 2.0, "scale": 10.0}}  # fmt: skip
    parsed = parse_event_dict(event, NOW)
    assert (parsed.ts_ms, parsed.order_id, parsed.quantity, parsed.scale) == (NOW, "7", 2, 10)


def test_future_limit_on_the_fast_path() -> None:
    """Exactly 24 h ahead is accepted by the fast path; 1 ms more is future_timestamp."""
    base = {"event_id": "e", "event_type": "t", "anonymous_id": "a"}
    assert intake._fast_build({**base, "timestamp": NOW + DAY}, NOW, False) is not None
    late = orjson.dumps({**base, "timestamp": NOW + DAY + 1})
    assert [r.reason for r in parse_payload(late, NOW).rejections] == ["future_timestamp"]
    assert parse_timestamp(MAX_TS_MS) == MAX_TS_MS


def test_new_event_is_an_ordinary_frozen_event() -> None:
    """new_event equals Event(*values): same class, equality, hash and frozenness."""
    values = ["e", "t", NOW, "v", "a", "u", *([""] * 11), 1.5, 2, "", "", None, "", None, 5,
              "", "", ""]  # fmt: skip
    made = new_event(*values)
    assert type(made) is Event
    assert made == Event(*values)
    assert hash(made) == hash(Event(*values))
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.ts_ms = 0  # type: ignore[misc]


def test_microsoft_click_id_tags_bing_cpc() -> None:
    """A Bing ad click (msclkid, no utm_*) is attributed to bing / cpc, as GA4 does."""
    from streams.engine.intake import _utm

    assert _utm("msclkid=abc123")[:2] == ("bing", "cpc")
    assert _utm("gclid=xyz")[:2] == ("google", "cpc")


def test_upper_case_utm_tags_are_read() -> None:
    """UTM keys are case-insensitive: UTM_SOURCE=news counts like utm_source=news."""
    from streams.engine.intake import _utm

    assert _utm("UTM_SOURCE=news&UTM_MEDIUM=email&UTM_CAMPAIGN=fall")[:3] == (
        "news",
        "email",
        "fall",
    )
