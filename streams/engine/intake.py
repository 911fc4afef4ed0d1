"""Intake: one Kafka message payload in, accepted events and machine-readable rejections out.

Validation is hand-written for speed but follows ``schemas/event.v1.json`` rule for rule
(``tests/unit/engine/test_intake_schema.py`` checks the two agree); the limits that JSON
Schema cannot express (message size, batch size, nesting depth, future timestamps) are
enforced here too. Bad input is never fatal: every problem becomes a ``Rejection`` whose
``reason`` is a stable string for the dead-letter topic and its counter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from streams.engine.events import Event
from streams.errors import JourneyError

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 10_000
MAX_STRING_CHARS = 8192  # JSON Schema maxLength counts characters, so do we
MAX_DEPTH = 32
MAX_FUTURE_MS = 24 * 3600 * 1000
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the schema's maximum

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class InvalidEvent(JourneyError):
    """An event that cannot be accepted; ``reason`` is the machine-readable dead-letter reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that was not accepted: the reason, the raw bytes and its place in a batch.

    ``payload`` is the whole message for a message-level problem, or the batch element
    re-serialised for a problem with one element; ``index`` is the element's position in
    the batch envelope, ``None`` when the message was not a batch.
    """

    reason: str
    payload: bytes
    index: int | None = None


@dataclass(slots=True)
class IntakeResult:
    """What one message yielded: accepted events (message order) and rejections."""

    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def parse_payload(payload: bytes, now_ms: int) -> IntakeResult:
    """Decode one Kafka message (one event or ``{"batch": [...]}``) and validate each event.

    ``now_ms`` is the injected wall clock used only for the future-timestamp check.
    """
    result = IntakeResult()
    if len(payload) > MAX_MESSAGE_BYTES:
        result.rejections.append(Rejection("message_too_large", payload))
        return result
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        result.rejections.append(Rejection("invalid_json", payload))
        return result
    # Counting brackets (in C) bounds the depth from above; walk only when it might matter.
    shallow = payload.count(b"{") + payload.count(b"[") <= MAX_DEPTH
    if not isinstance(obj, dict):
        result.rejections.append(Rejection("not_an_object", payload))
        return result
    if "batch" not in obj:
        try:
            if not shallow and _depth(obj) > MAX_DEPTH:
                raise InvalidEvent("too_deep")
            result.events.append(_build(obj, now_ms))
        except InvalidEvent as exc:
            result.rejections.append(Rejection(exc.reason, payload))
        return result
    batch = obj["batch"]
    if not isinstance(batch, list):
        result.rejections.append(Rejection("bad_field:batch", payload))
        return result
    if len(batch) > MAX_BATCH_EVENTS:
        result.rejections.append(Rejection("batch_too_large", payload))
        return result
    for index, element in enumerate(batch):
        try:
            if not isinstance(element, dict):
                raise InvalidEvent("not_an_object")
            # The envelope object and its list are two levels above each element.
            if not shallow and _depth(element) > MAX_DEPTH - 2:
                raise InvalidEvent("too_deep")
            result.events.append(_build(element, now_ms))
        except InvalidEvent as exc:
            result.rejections.append(Rejection(exc.reason, _reserialise(element, payload), index))
    return result


def parse_event_dict(obj: Mapping[str, Any], now_ms: int) -> Event:
    """Validate one already-decoded event (a JSONL or CSV line in replay) into an ``Event``.

    Raises ``InvalidEvent`` (with ``.reason``) when the event is not acceptable.
    """
    if not isinstance(obj, Mapping):
        raise InvalidEvent("not_an_object")
    if _depth(obj) > MAX_DEPTH:
        raise InvalidEvent("too_deep")
    return _build(obj, now_ms)


def parse_timestamp(value: object) -> int:
    """RFC 3339 with an offset, or integer epoch milliseconds, to UTC epoch milliseconds.

    Raises ``InvalidEvent("bad_timestamp")``. Times before 1970 are rejected (ClickHouse stores
    unsigned times); a leap second ``:60`` is read as the next minute's start.
    """
    if isinstance(value, bool):
        raise InvalidEvent("bad_timestamp")
    if isinstance(value, int):
        if 0 <= value <= MAX_TS_MS:
            return value
        raise InvalidEvent("bad_timestamp")
    if isinstance(value, float):
        # JSON Schema counts 1.7e12 as an integer; so must we to accept the same documents.
        if value.is_integer() and 0 <= value <= MAX_TS_MS:
            return int(value)
        raise InvalidEvent("bad_timestamp")
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidEvent("bad_timestamp")
    m = _RFC3339.fullmatch(value)
    if m is None:
        raise InvalidEvent("bad_timestamp")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    if not 1 <= month <= 12 or hour > 23 or minute > 59 or second > 60:
        raise InvalidEvent("bad_timestamp")
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS_IN_MONTH[month - 1] + (1 if leap and month == 2 else 0):
        raise InvalidEvent("bad_timestamp")
    frac = m.group(7)
    millis = int((frac + "00")[:3]) if frac else 0
    offset_min = 0
    if m.group(9):
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            raise InvalidEvent("bad_timestamp")
        offset_min = (off_h * 60 + off_m) * (1 if m.group(9) == "+" else -1)
    seconds = (
        _days_from_civil(year, month, day) * 86400
        + hour * 3600
        + minute * 60
        + second
        - offset_min * 60
    )
    ts = seconds * 1000 + millis
    if not 0 <= ts <= MAX_TS_MS:
        raise InvalidEvent("bad_timestamp")
    return ts


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _depth(obj: object) -> int:
    """Nesting depth: a scalar is 0, a container is 1 + its deepest child."""
    deepest = 0
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break  # deep enough to reject; no need to walk hostile input further
        stack.extend((child, level + 1) for child in children)
    return deepest


def _reserialise(element: object, payload: bytes) -> bytes:
    try:
        return orjson.dumps(element)
    except (orjson.JSONEncodeError, TypeError):
        return payload  # deeper than orjson will write: keep the whole message instead


def _text(obj: Mapping[str, Any], key: str, name: str) -> str:
    value = obj.get(key)
    if value is None:
        if key in obj:
            raise InvalidEvent(f"bad_field:{name}")
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(f"bad_field:{name}")
    if len(value) > MAX_STRING_CHARS:
        raise InvalidEvent(f"field_too_long:{name}")
    return value


def _id_text(obj: Mapping[str, Any], key: str) -> str:
    value = _text(obj, key, key)
    if not value:
        raise InvalidEvent(f"missing_field:{key}")
    return value


def _text_or_int(obj: Mapping[str, Any], key: str, name: str) -> str:
    value = obj.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _text(obj, key, name)


def _number(obj: Mapping[str, Any], key: str, name: str) -> float | None:
    if key not in obj:
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"bad_field:{name}")
    return float(value)


def _integer(obj: Mapping[str, Any], key: str, name: str) -> int | None:
    if key not in obj:
        return None
    value = obj[key]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidEvent(f"bad_field:{name}")
    return value


def _section(obj: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = obj.get(key)
    if value is None:
        if key in obj:
            raise InvalidEvent(f"bad_field:{key}")
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent(f"bad_field:{key}")
    return value


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _build(obj: Mapping[str, Any], now_ms: int) -> Event:
    """Validate one event object and flatten it; raises ``InvalidEvent``."""
    event_id = _id_text(obj, "event_id")
    event_type = _id_text(obj, "event_type")
    if "timestamp" not in obj:
        raise InvalidEvent("missing_field:timestamp")
    ts_ms = parse_timestamp(obj["timestamp"])
    anonymous_id = _text(obj, "anonymous_id", "anonymous_id")
    user_id = _text(obj, "user_id", "user_id")
    if not anonymous_id and not user_id:
        raise InvalidEvent("missing_identity")

    page = _section(obj, "page")
    url = _text(page, "url", "page.url")
    path = _text(page, "path", "page.path")
    title = _text(page, "title", "page.title")
    referrer = _text(page, "referrer", "page.referrer")
    parsed = None
    if url and (not path or "campaign" not in obj or referrer):
        try:
            parsed = urlsplit(url)
        except ValueError:
            parsed = None
    if not path and parsed is not None:
        path = parsed.path or "/"
    if referrer and parsed is not None and _host(referrer) == (parsed.hostname or "").lower():
        referrer = ""  # same-host referrer: internal navigation, not a touchpoint

    if "campaign" in obj:
        camp = _section(obj, "campaign")
        source = _text(camp, "source", "campaign.source")
        medium = _text(camp, "medium", "campaign.medium")
        name = _text(camp, "name", "campaign.name")
        term = _text(camp, "term", "campaign.term")
        content = _text(camp, "content", "campaign.content")
    else:
        source, medium, name, term, content = _utm(parsed.query if parsed is not None else "")

    props = _section(obj, "properties")
    product_id = _text_or_int(props, "product_id", "properties.product_id")
    category = _text(props, "category", "properties.category")
    price = _number(props, "price", "properties.price")
    if price is not None and price < 0:
        raise InvalidEvent("negative_price")
    quantity = _integer(props, "quantity", "properties.quantity")
    if quantity is not None and quantity < 0:
        raise InvalidEvent("bad_field:properties.quantity")
    currency = _text(props, "currency", "properties.currency")
    order_id = _text_or_int(props, "order_id", "properties.order_id")
    revenue = _number(props, "revenue", "properties.revenue")
    if revenue is not None and revenue < 0:
        raise InvalidEvent("negative_revenue")
    cart_id = _text_or_int(props, "cart_id", "properties.cart_id")
    score = _number(props, "score", "properties.score")
    scale = _integer(props, "scale", "properties.scale")
    if scale is not None and scale not in (5, 10):
        raise InvalidEvent("bad_field:properties.scale")

    ctx = _section(obj, "context")
    user_agent = _text(ctx, "user_agent", "context.user_agent")
    locale = _text(ctx, "locale", "context.locale")
    device_type = _text(ctx, "device_type", "context.device_type")

    if ts_ms > now_ms + MAX_FUTURE_MS:
        raise InvalidEvent("future_timestamp")
    return Event(
        event_id, event_type, ts_ms, anonymous_id or user_id, anonymous_id, user_id,
        url, path, title, referrer, source, medium, name, term, content,
        product_id, category, price, quantity, currency, order_id, revenue, cart_id,
        score, scale, device_type, user_agent, locale,
    )  # fmt: skip


def _utm(query: str) -> tuple[str, str, str, str, str]:
    """Campaign fields from a URL query: ``utm_*``, else Google/Microsoft ad click ids."""
    if not query or ("utm_" not in query and "clid=" not in query):
        return ("", "", "", "", "")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=False):
        params.setdefault(key.lower(), value[:MAX_STRING_CHARS])
    source = params.get("utm_source", "")
    medium = params.get("utm_medium", "")
    if not source and not medium:
        # Auto-tagged ad clicks carry no utm_*; GA4 reads them as paid search.
        if "gclid" in params:
            source, medium = "google", "cpc"
        elif "msclkid" in params:
            source, medium = "bing", "cpc"
    return (
        source,
        medium,
        params.get("utm_campaign", ""),
        params.get("utm_term", ""),
        params.get("utm_content", ""),
    )
