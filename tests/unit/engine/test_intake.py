"""Intake: decoding, limits and every rejection reason of the v1 contract."""

from __future__ import annotations

import orjson
import pytest

from streams.engine.intake import (
    MAX_BATCH_EVENTS,
    InvalidEvent,
    parse_event_dict,
    parse_payload,
    parse_timestamp,
)

NOW = 1_700_000_000_000  # 2023-11-14T22:13:20Z
DAY = 86_400_000


def good(**over: object) -> dict[str, object]:
    """A valid event, with fields overridden (a value of ... removes the field)."""
    event: dict[str, object] = {"event_id": "e1", "event_type": "page_view",
                                "timestamp": NOW, "anonymous_id": "a1"}  # fmt: skip
    for key, value in over.items():
        if value is ...:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def reasons(payload: bytes) -> list[str]:
    """Rejection reasons of one message."""
    return [r.reason for r in parse_payload(payload, NOW).rejections]


def test_accepts_minimal_event() -> None:
    """A minimal valid event is accepted with visitor_key = anonymous_id."""
    result = parse_payload(orjson.dumps(good()), NOW)
    assert result.rejections == []
    (event,) = result.events
    assert (event.event_id, event.ts_ms, event.visitor_key) == ("e1", NOW, "a1")


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (good(event_id=...), "missing_field:event_id"),
        (good(event_id=""), "missing_field:event_id"),
        (good(event_type=...), "missing_field:event_type"),
        (good(timestamp=...), "missing_field:timestamp"),
        (good(anonymous_id=...), "missing_identity"),
        (good(anonymous_id="", user_id=""), "missing_identity"),
        (good(timestamp="2023-11-14 22:13:20"), "bad_timestamp"),
        (good(timestamp="2023-02-30T00:00:00Z"), "bad_timestamp"),
        (good(timestamp=-1), "bad_timestamp"),
        (good(timestamp=True), "bad_timestamp"),
        (good(event_id=7), "bad_field:event_id"),
        (good(user_id=None), "bad_field:user_id"),
        (good(page="x"), "bad_field:page"),
        (good(page={"url": 3}), "bad_field:page.url"),
        (good(properties={"price": "1"}), "bad_field:properties.price"),
        (good(properties={"quantity": 1.5}), "bad_field:properties.quantity"),
        (good(properties={"quantity": 2**32}), "bad_field:properties.quantity"),  # over UInt32
        (good(properties={"quantity": 2**63 - 1}), "bad_field:properties.quantity"),
        (good(properties={"scale": 7}), "bad_field:properties.scale"),
        (good(properties={"order_id": 1.5}), "bad_field:properties.order_id"),
        (good(properties={"price": -0.01}), "negative_price"),
        (good(properties={"revenue": -5}), "negative_revenue"),
        (good(timestamp=NOW + DAY + 1), "future_timestamp"),
        (good(page={"title": "x" * 8193}), "field_too_long:page.title"),
    ],
)
def test_rejection_reasons(event: dict[str, object], reason: str) -> None:
    """Each contract violation is rejected with its machine-readable reason."""
    assert reasons(orjson.dumps(event)) == [reason]


def test_future_limit_is_inclusive() -> None:
    """An event exactly 24 h ahead of now is accepted; 1 ms more is future_timestamp."""
    assert reasons(orjson.dumps(good(timestamp=NOW + DAY))) == []


def test_string_of_exactly_8_kib_accepted() -> None:
    """A string of exactly 8192 characters is within the limit."""
    assert reasons(orjson.dumps(good(page={"title": "x" * 8192}))) == []


def test_message_level_rejections() -> None:
    """Unparsable JSON, a non-object, an oversized message and deep nesting are rejected."""
    assert reasons(b"{nope") == ["invalid_json"]
    assert reasons(b"[1, 2]") == ["not_an_object"]
    assert reasons(b" " * (1024 * 1024 + 1)) == ["message_too_large"]
    deep: object = 1
    for _ in range(31):
        deep = [deep]
    assert reasons(orjson.dumps(good(x=deep))) == []  # 1 object + 31 lists = depth 32
    assert reasons(orjson.dumps(good(x=[deep]))) == ["too_deep"]


def test_batch_with_one_bad_element() -> None:
    """In a batch envelope each element is validated alone; the bad one carries its index."""
    batch = [good(event_id="a"), good(event_id="b", timestamp="yesterday"), 5, good(event_id="c")]
    result = parse_payload(orjson.dumps({"batch": batch}), NOW)
    assert [e.event_id for e in result.events] == ["a", "c"]
    assert [(r.reason, r.index) for r in result.rejections] == [
        ("bad_timestamp", 1),
        ("not_an_object", 2),
    ]
    assert orjson.loads(result.rejections[0].payload) == batch[1]


def test_batch_too_large() -> None:
    """A batch of more than 10,000 events is rejected as a whole."""
    payload = orjson.dumps({"batch": [{}] * (MAX_BATCH_EVENTS + 1)})
    assert reasons(payload) == ["batch_too_large"]
    assert len(parse_payload(orjson.dumps({"batch": [{}] * MAX_BATCH_EVENTS}), NOW).rejections) == (
        MAX_BATCH_EVENTS
    )


def test_text_that_is_not_utf8_is_rejected_not_raised() -> None:
    """A known field holding bytes that are not UTF-8 is invalid_json, alone or in a batch.

    msgspec raises Python's UnicodeDecodeError for it (no DecodeError), which escaped
    parse_payload and stopped the intake.
    """
    event = orjson.dumps(good(event_id="\u00e9"))
    broken = event.replace("\u00e9".encode(), b"\xc3")
    assert reasons(broken) == ["invalid_json"]
    result = parse_payload(b'{"batch": [%b, %b]}' % (event, broken), NOW)
    assert [e.event_id for e in result.events] == ["\u00e9"]
    assert [(r.reason, r.index) for r in result.rejections] == [("invalid_json", 1)]


def test_a_quantity_beyond_uint32_is_rejected() -> None:
    """2**32 and more is bad_field: 2**64 stopped the worker at the changelog's msgpack."""
    event = orjson.dumps(good(properties={"quantity": 4_294_967_295}))
    assert reasons(event) == []
    for text in (b"4294967296", b"18446744073709551616", b"1" + b"0" * 40, b"1e300"):
        payload = event.replace(b"4294967295", text)
        assert reasons(payload) == ["bad_field:properties.quantity"], text


def test_rejection_keeps_raw_payload() -> None:
    """A single-event rejection carries the original bytes and no batch index."""
    raw = b'{"event_id": "x"}'
    (rejection,) = parse_payload(raw, NOW).rejections
    assert (rejection.payload, rejection.index) == (raw, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("2023-11-14T22:13:20.5Z", NOW + 500),
        ("2023-11-14t22:13:20.123999z", NOW + 123),
        ("2023-11-15T00:13:20+02:00", NOW),
        ("2023-11-14 20:13:20-02:00", NOW),
        ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        (1_700_000_000_000, NOW),
        (1.7e12, NOW),
    ],
)
def test_timestamps_to_utc_epoch_ms(text: object, expected: int) -> None:
    """RFC 3339 with offsets (fractions truncated to ms) and epoch ms parse to UTC epoch ms."""
    assert parse_timestamp(text) == expected


def test_flattening_page_campaign_and_properties() -> None:
    """Path, utm campaign and integer ids are flattened; a same-host referrer is dropped."""
    event = parse_event_dict(
        good(
            user_id="u1",
            page={
                "url": "https://shop.example/p/1?utm_source=news&utm_medium=email&utm_campaign=x",
                "referrer": "https://shop.example/",
            },
            properties={"product_id": 42, "order_id": "o1", "price": 3, "quantity": 2},
            context={"device_type": "mobile"},
        ),
        NOW,
    )
    assert (event.page_path, event.referrer) == ("/p/1", "")
    assert (event.campaign_source, event.campaign_medium, event.campaign_name) == (
        "news", "email", "x",
    )  # fmt: skip
    assert (event.product_id, event.order_id, event.price, event.quantity) == ("42", "o1", 3.0, 2)
    assert (event.visitor_key, event.user_id, event.device) == ("a1", "u1", "mobile")


def test_campaign_object_wins_over_utm_and_gclid_is_paid_search() -> None:
    """An explicit campaign object is used as given; a gclid without utm means google/cpc."""
    explicit = parse_event_dict(
        good(campaign={"source": "fb"}, page={"url": "https://s.example/?utm_source=x"}), NOW
    )
    assert (explicit.campaign_source, explicit.campaign_medium) == ("fb", "")
    clicked = parse_event_dict(good(page={"url": "https://s.example/?gclid=abc"}), NOW)
    assert (clicked.campaign_source, clicked.campaign_medium) == ("google", "cpc")


def test_parse_event_dict_raises_with_reason() -> None:
    """parse_event_dict raises InvalidEvent carrying the same reason string."""
    with pytest.raises(InvalidEvent) as info:
        parse_event_dict(good(user_id=..., anonymous_id=...), NOW)
    assert info.value.reason == "missing_identity"


def test_user_only_event_uses_user_id_as_visitor_key() -> None:
    """Without anonymous_id the visitor key is the user_id."""
    event = parse_event_dict(good(anonymous_id=..., user_id="u9"), NOW)
    assert (event.visitor_key, event.anonymous_id) == ("u9", "")


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"properties": {"score": float("nan")}}, "bad_field:properties.score"),
        ({"properties": {"price": float("inf")}}, "bad_field:properties.price"),
        ({"properties": {"revenue": float("-inf")}}, "negative_revenue"),
        ({"event_id": "e\ud800"}, "not_utf8"),  # accepted, then no encoder could write it
        ({"properties": {"quantity": "a\udcff"}}, "not_utf8"),  # msgspec's error raised
    ],
)
def test_parse_event_dict_refuses_what_json_cannot_hold(
    over: dict[str, object], reason: str
) -> None:
    """A decoded document may hold NaN, infinity or lone surrogates; each is a rejection."""
    with pytest.raises(InvalidEvent) as caught:
        parse_event_dict(good(**over), NOW)
    assert caught.value.reason == reason
