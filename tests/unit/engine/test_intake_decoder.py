"""The typed intake decoder: the same events and reasons as an independent reference."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_intake import reference_build
from reference_intake import reference_timestamp as strict_timestamp
from test_intake_schema import events, required_heavy

from streams.engine import intake
from streams.engine.events import EVENT_FIELDS, Event
from streams.engine.intake import (
    MAX_BATCH_EVENTS,
    MAX_MESSAGE_BYTES,
    MAX_TS_MS,
    InvalidEvent,
    parse_event_dict,
    parse_payload,
    parse_timestamp,
)

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
DAY = 86_400_000
MISSING = object()

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
    """The regex path of parse_timestamp (None when it rejects)."""
    try:
        return strict_timestamp(value)
    except InvalidEvent:
        return None


def reference_event(obj: dict[str, Any]) -> Event | str:
    """What the reference validator makes of ``obj``: the event or the rejection reason."""
    try:
        return reference_build(obj, NOW)
    except InvalidEvent as exc:
        return exc.reason


def decoded(obj: dict[str, Any]) -> Event | str:
    """What parse_payload makes of ``obj`` as one message: the event or the reason."""
    result = parse_payload(orjson.dumps(obj), NOW)
    if result.events:
        return result.events[0]
    return result.rejections[0].reason


def typed(event: Event) -> list[tuple[type, object]]:
    """Every field with its type, so 3 and 3.0 (or "7" and 7) count as different."""
    return [(type(getattr(event, name)), getattr(event, name)) for name in EVENT_FIELDS]


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


def test_realistic_event_matches_the_reference() -> None:
    """A typical event decodes field for field (and type) as the reference builds it."""
    parsed = decoded(REALISTIC)
    assert isinstance(parsed, Event)
    reference = reference_event(REALISTIC)
    assert isinstance(reference, Event)
    assert typed(parsed) == typed(reference)
    assert (parsed.campaign_source, parsed.product_id, parsed.price) == ("news", "10183", 53.0)
    assert (parsed.ts_ms, parsed.visitor_key, parsed.page_path) == (
        NOW + 97,
        REALISTIC["anonymous_id"],
        "/p/sku-10183",
    )


@settings(max_examples=1500, deadline=None)
@given(st.one_of(events, required_heavy))
def test_decoder_agrees_with_the_reference(event: dict[str, Any]) -> None:
    """The decoder accepts exactly what the reference accepts, with identical events.

    Where the document breaks several rules the two may name different ones (the decoder
    reports the first in document order); a document breaking one rule is covered by
    ``test_every_rejection_reason``.
    """
    parsed, reference = decoded(event), reference_event(event)
    if isinstance(reference, Event):
        assert isinstance(parsed, Event), parsed
        assert typed(parsed) == typed(reference)
    else:
        assert isinstance(parsed, str), (parsed, reference)
    via_dict: Event | str
    try:
        via_dict = parse_event_dict(event, NOW)
    except InvalidEvent as exc:
        via_dict = exc.reason
    assert via_dict == parsed


VALID: dict[str, Any] = {
    "event_id": "e1",
    "event_type": "purchase",
    "timestamp": NOW,
    "anonymous_id": "a1",
    "user_id": "u1",
    "page": {"url": "https://s.example/p", "path": "/p", "title": "t", "referrer": ""},
    "campaign": {"source": "s", "medium": "m", "name": "n", "term": "", "content": ""},
    "properties": {"product_id": "p1", "category": "c", "price": 1.5, "quantity": 1,
                   "currency": "EUR", "order_id": 7, "revenue": 3.0, "cart_id": "c1",
                   "score": 4, "scale": 5},
    "context": {"user_agent": "ua", "locale": "en", "device_type": "mobile"},
}  # fmt: skip
TEXT_FIELDS = [
    *(("", key) for key in ("anonymous_id", "user_id")),
    *(("page", key) for key in ("url", "path", "title", "referrer")),
    *(("campaign", key) for key in ("source", "medium", "name", "term", "content")),
    *(("properties", key) for key in ("product_id", "category", "currency", "order_id",
                                      "cart_id")),
    *(("context", key) for key in ("user_agent", "locale", "device_type")),
]  # fmt: skip
NUMBER_FIELDS = [("properties", key) for key in ("price", "quantity", "revenue", "score", "scale")]
SECTIONS = ["page", "campaign", "properties", "context"]


def path_of(section: str, key: str) -> str:
    return f"{section}.{key}" if section else key


def violations() -> list[tuple[str, Any, str]]:
    """(field path, value to set or MISSING, the one reason it must give), every reason."""
    cases: list[tuple[str, Any, str]] = [
        ("event_id", MISSING, "missing_field:event_id"),
        ("event_id", "", "missing_field:event_id"),
        ("event_id", 5, "bad_field:event_id"),
        ("event_id", None, "bad_field:event_id"),
        ("event_id", "x" * 8193, "field_too_long:event_id"),
        ("event_type", MISSING, "missing_field:event_type"),
        ("event_type", "", "missing_field:event_type"),
        ("event_type", [], "bad_field:event_type"),
        ("event_type", "x" * 8193, "field_too_long:event_type"),
        ("timestamp", MISSING, "missing_field:timestamp"),
        ("timestamp", None, "bad_timestamp"),
        ("timestamp", True, "bad_timestamp"),
        ("timestamp", "yesterday", "bad_timestamp"),
        ("timestamp", -1, "bad_timestamp"),
        ("timestamp", 1.5, "bad_timestamp"),
        ("timestamp", {}, "bad_timestamp"),
        ("timestamp", NOW + DAY + 1, "future_timestamp"),
        ("properties.price", -0.5, "negative_price"),
        ("properties.revenue", -1, "negative_revenue"),
        ("properties.quantity", -1, "bad_field:properties.quantity"),
        ("properties.quantity", 1.5, "bad_field:properties.quantity"),
        ("properties.scale", 7, "bad_field:properties.scale"),
        ("properties.scale", 5.5, "bad_field:properties.scale"),
        ("properties.product_id", 2.5, "bad_field:properties.product_id"),
        ("properties.order_id", False, "bad_field:properties.order_id"),
    ]
    for section, key in TEXT_FIELDS:
        path = path_of(section, key)
        cases += [(path, None, f"bad_field:{path}"), (path, "y" * 8193, f"field_too_long:{path}")]
        if key not in ("product_id", "order_id", "cart_id"):
            cases.append((path, 3, f"bad_field:{path}"))
    for section, key in NUMBER_FIELDS:
        path = path_of(section, key)
        cases += [(path, None, f"bad_field:{path}"), (path, "1", f"bad_field:{path}")]
    for section in SECTIONS:
        cases += [(section, None, f"bad_field:{section}"), (section, [1], f"bad_field:{section}")]
    return cases


def with_value(path: str, value: Any, identity: str = "both") -> dict[str, Any]:
    """VALID with one field set (or removed, for MISSING)."""
    event: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in VALID.items()}
    if identity == "none":
        event.pop("anonymous_id"), event.pop("user_id")
    holder, _, key = path.rpartition(".")
    target = event[holder] if holder else event
    if value is MISSING:
        target.pop(key, None)
    else:
        target[key] = value
    return event


@pytest.mark.parametrize(("path", "value", "reason"), violations())
def test_every_rejection_reason(path: str, value: Any, reason: str) -> None:
    """One broken rule gives its reason: alone, in a batch, and from a decoded dict."""
    event = with_value(path, value)
    assert reference_event(event) == reason  # the case really breaks that one rule
    assert decoded(event) == reason
    batch = parse_payload(orjson.dumps({"batch": [VALID, event, VALID]}), NOW)
    assert [(r.reason, r.index) for r in batch.rejections] == [(reason, 1)]
    assert len(batch.events) == 2
    with pytest.raises(InvalidEvent) as info:
        parse_event_dict(event, NOW)
    assert info.value.reason == reason


def test_message_level_reasons() -> None:
    """The reasons that belong to a whole message, and a missing identity."""

    def reasons(payload: bytes) -> list[str]:
        return [r.reason for r in parse_payload(payload, NOW).rejections]

    assert decoded(with_value("user_id", "", "none")) == "missing_identity"
    assert decoded({**VALID, "anonymous_id": "", "user_id": ""}) == "missing_identity"
    assert reasons(b"{nope") == ["invalid_json"]
    assert reasons(rb'{"event_id": "\ud800"}') == ["invalid_json"]
    # A number no float holds, in a field that is read (members nobody reads are skipped).
    score = orjson.dumps({**VALID, "properties": {"score": 1.0}}).replace(b"1.0", b"1e400")
    assert reasons(score) == ["invalid_json"]
    assert reasons(b"[1]") == ["not_an_object"]
    assert reasons(b'"text"') == ["not_an_object"]
    assert reasons(b" " * (MAX_MESSAGE_BYTES + 1)) == ["message_too_large"]
    assert reasons(orjson.dumps({"batch": [{}] * (MAX_BATCH_EVENTS + 1)})) == ["batch_too_large"]
    assert reasons(orjson.dumps({"batch": 5})) == ["bad_field:batch"]
    assert reasons(orjson.dumps({"batch": None})) == ["bad_field:batch"]


def test_envelope_members_besides_the_batch_do_not_matter() -> None:
    """An envelope with other (even invalid) members still yields its elements."""
    payload = orjson.dumps({"batch": [VALID], "page": 5, "event_id": None})
    result = parse_payload(payload, NOW)
    assert (len(result.events), result.rejections) == (1, [])


def test_batch_rejection_keeps_the_element_bytes() -> None:
    """A rejected element's payload is the element as sent, whitespace and all."""
    element = b'{ "event_id": "x",  "timestamp": 0 }'
    payload = b'{"batch": [' + orjson.dumps(VALID) + b", " + element + b"]}"
    (rejection,) = parse_payload(payload, NOW).rejections
    assert (rejection.reason, rejection.payload, rejection.index) == (
        "missing_field:event_type",
        element,
        1,
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(events, required_heavy), max_size=6), st.integers(1, 6))
def test_batching_does_not_change_the_result(docs: list[dict[str, Any]], size: int) -> None:
    """Events and reasons are the same one message per event and in envelopes of any size."""
    alone = [decoded(doc) for doc in docs]
    together: list[Event | str] = []
    for start in range(0, len(docs), size):
        result = parse_payload(orjson.dumps({"batch": docs[start : start + size]}), NOW)
        by_index: dict[int, Event | str] = {r.index: r.reason for r in result.rejections}
        accepted = iter(result.events)
        for index in range(len(docs[start : start + size])):
            together.append(by_index[index] if index in by_index else next(accepted))
    assert together == alone


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
def test_null_and_wrong_properties_are_rejected(props: dict[str, object], reason: str) -> None:
    """A JSON null is not an absent property: it is rejected, as by the reference."""
    event = {"event_id": "e", "event_type": "t", "timestamp": NOW, "anonymous_id": "a",
             "properties": props}  # fmt: skip
    assert reference_event(event) == reason
    assert [r.reason for r in parse_payload(orjson.dumps(event), NOW).rejections] == [reason]


def test_integer_valued_floats_still_accepted() -> None:
    """Float ids, quantities and timestamps JSON Schema calls integers go the reference way."""
    event = {"event_id": "e", "event_type": "t", "timestamp": 1.7e12, "anonymous_id": "a",
             "properties": {"order_id": 7.0, "quantity": 2.0, "scale": 10.0}}  # fmt: skip
    parsed = parse_event_dict(event, NOW)
    assert (parsed.ts_ms, parsed.order_id, parsed.quantity, parsed.scale) == (NOW, "7", 2, 10)


def test_future_limit() -> None:
    """Exactly 24 h ahead is accepted; 1 ms more is future_timestamp."""
    base = {"event_id": "e", "event_type": "t", "anonymous_id": "a"}
    assert isinstance(decoded({**base, "timestamp": NOW + DAY}), Event)
    late = orjson.dumps({**base, "timestamp": NOW + DAY + 1})
    assert [r.reason for r in parse_payload(late, NOW).rejections] == ["future_timestamp"]
    assert parse_timestamp(MAX_TS_MS) == MAX_TS_MS


def test_event_is_frozen_hashable_and_encodes_as_an_array() -> None:
    """Events compare and hash by value, cannot change, and round-trip as JSON arrays."""
    values = ["e", "t", NOW, "v", "a", "u", *([""] * 11), 1.5, 2, "", "", None, "", None, 5,
              "", "", ""]  # fmt: skip
    made = Event(*values)
    assert made == Event(*values)
    assert hash(made) == hash(Event(*values))
    with pytest.raises(AttributeError):
        made.ts_ms = 0  # type: ignore[misc]
    assert orjson.loads(msgspec.json.encode(made)) == values
    assert msgspec.json.decode(msgspec.json.encode(made), type=Event) == made


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
