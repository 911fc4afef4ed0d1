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

from streams.engine.events import Event, new_event
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
_MINUTE = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})", re.ASCII)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_ZERO_OFFSETS = ("+00:00", "-00:00")

# Bounded memo tables for the hot path. Traffic repeats a few thousand page URLs and
# referrers and stamps many events in the same minute, so parsing each once pays; clearing
# when full (rather than LRU bookkeeping) keeps a hit to one dict lookup, and the key-length
# cap bounds memory under hostile input (at most _CACHE_SIZE * _CACHE_KEY_CHARS characters).
_CACHE_SIZE = 4096
_CACHE_KEY_CHARS = 2048
_NO_CAMPAIGN = ("", "", "", "", "")
#: url -> (parsed ok, path or "/", lowercased host, utm campaign fields)
_URL_INFO: dict[str, tuple[bool, str, str, tuple[str, str, str, str, str]]] = {}
#: "YYYY-MM-DDTHH:MM" (separator T, t or space) -> epoch ms of that UTC minute
_MINUTE_MS: dict[str, int] = {}
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_EMPTY: dict[str, Any] = {}  # shared default for an absent section; never mutated


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
    if len(payload) > MAX_MESSAGE_BYTES:
        return IntakeResult([], [Rejection("message_too_large", payload)])
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return IntakeResult([], [Rejection("invalid_json", payload)])
    if not isinstance(obj, dict):
        return IntakeResult([], [Rejection("not_an_object", payload)])
    # Counting brackets (in C) bounds the depth from above; walk only when it might matter.
    shallow = payload.count(b"{") + payload.count(b"[") <= MAX_DEPTH
    if "batch" not in obj:
        try:
            if not shallow and _depth(obj) > MAX_DEPTH:
                raise InvalidEvent("too_deep")
            # A JSON string of n characters takes more than n bytes, so in a message this
            # small no string can exceed the limit and the fast path skips those checks.
            event = _fast_build(obj, now_ms, len(payload) > MAX_STRING_CHARS)
            return IntakeResult([_build(obj, now_ms) if event is None else event], [])
        except InvalidEvent as exc:
            return IntakeResult([], [Rejection(exc.reason, payload)])
    result = IntakeResult()
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
            if not shallow and not _within_two_levels(element) and _depth(element) > MAX_DEPTH - 2:
                raise InvalidEvent("too_deep")
            event = _fast_build(element, now_ms, True) if type(element) is dict else None
            result.events.append(_build(element, now_ms) if event is None else event)
        except InvalidEvent as exc:
            result.rejections.append(Rejection(exc.reason, _reserialise(element, payload), index))
    return result


def parse_event_dict(obj: Mapping[str, Any], now_ms: int) -> Event:
    """Validate one already-decoded event (a JSONL or CSV line in replay) into an ``Event``.

    Raises ``InvalidEvent`` (with ``.reason``) when the event is not acceptable.
    """
    if not isinstance(obj, Mapping):
        raise InvalidEvent("not_an_object")
    if (type(obj) is not dict or not _within_two_levels(obj)) and _depth(obj) > MAX_DEPTH:
        raise InvalidEvent("too_deep")
    event = _fast_build(obj, now_ms, True) if type(obj) is dict else None
    return _build(obj, now_ms) if event is None else event


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
    ts = _utc_timestamp(value)
    if ts >= 0:
        return ts
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


def _utc_timestamp(value: str) -> int:
    """Fast path of ``parse_timestamp`` for ``YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00|-00:00)``.

    Returns -1 for any other shape and for anything invalid, leaving the verdict to the
    regex path. The date, hour and minute are validated once per distinct minute (memoised);
    the rest is checked here by slicing, which is several times cheaper than the regex.
    """
    size = len(value)
    if size == 24:  # the common 2024-01-01T00:00:00.000Z
        if value[19] != "." or value[23] not in "Zz":
            return -1
        digits = value[17:19] + value[20:23]
    elif size == 20:
        if value[19] not in "Zz":
            return -1
        digits = value[17:19] + "000"
    elif size == 29:
        if value[19] != "." or value[23:] not in _ZERO_OFFSETS:
            return -1
        digits = value[17:19] + value[20:23]
    elif size == 25:
        if value[19:] not in _ZERO_OFFSETS:
            return -1
        digits = value[17:19] + "000"
    else:
        return -1
    # "SSfff" read as one number is the milliseconds into the minute. isdigit alone admits
    # non-ASCII digits such as "٣", which the ASCII regex rejects; int() would take them.
    if value[16] != ":" or not digits.isdigit() or not digits.isascii():
        return -1
    prefix = value[:16]
    base = _MINUTE_MS.get(prefix)
    if base is None:
        base = _minute_ms(prefix)
        if base < 0:
            return -1
        if len(_MINUTE_MS) >= _CACHE_SIZE:
            _MINUTE_MS.clear()
        _MINUTE_MS[prefix] = base
    millis = int(digits)
    if millis >= 61_000:  # second 60 is a leap second (the next minute's start); 61 is not
        return -1
    ts = base + millis
    return ts if ts <= MAX_TS_MS else -1


def _minute_ms(prefix: str) -> int:
    """Epoch ms of a valid ``YYYY-MM-DDTHH:MM`` UTC minute at or after 1970, else -1."""
    m = _MINUTE.fullmatch(prefix)
    if m is None:
        return -1
    year, month, day, hour, minute = (int(g) for g in m.groups())
    if not 1 <= month <= 12 or hour > 23 or minute > 59:
        return -1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    if not 1 <= day <= _DAYS_IN_MONTH[month - 1] + (1 if leap and month == 2 else 0):
        return -1
    ms = (_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60) * 1000
    return ms if ms >= 0 else -1


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = (year if year >= 0 else year - 399) // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _depth(obj: object) -> int:
    """Nesting depth: a scalar is 0, a container is 1 + its deepest child.

    Exact up to ``MAX_DEPTH + 1``; beyond that it stops early. Only containers are pushed:
    an event is mostly strings, and stacking them just to pop and skip them dominated.
    """
    if not isinstance(obj, dict | list):
        return 0
    deepest = 0
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if level > MAX_DEPTH:
                break  # deep enough to reject; no need to walk hostile input further
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, level + 1))
    return deepest


def _within_two_levels(obj: dict[str, Any]) -> bool:
    """A cheap proof that ``_depth(obj) <= 2``; ``False`` means "walk it to find out".

    True only when every value below ``obj``'s own values has an exact scalar type, which
    the type-set test checks in C. An event is almost always a flat object of flat
    sections, so this replaces the generic walk for nearly every event of a batch.
    """
    for value in obj.values():
        kind = type(value)
        if kind is dict:
            if not _SCALAR_TYPES.issuperset(map(type, value.values())):
                return False
        elif kind is list:
            if not _SCALAR_TYPES.issuperset(map(type, value)):
                return False
        elif kind not in _SCALAR_TYPES:
            return False
    return True


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


def _url_info(url: str) -> tuple[bool, str, str, tuple[str, str, str, str, str]]:
    """What ``_build`` derives from one URL, memoised: (parsed ok, path or "/", host, utm)."""
    info = _URL_INFO.get(url)  # callers try the dict first; this is the miss path
    if info is None:
        try:
            parsed = urlsplit(url)
        except ValueError:
            info = (False, "", "", _NO_CAMPAIGN)
        else:
            host = (parsed.hostname or "").lower()
            info = (True, parsed.path or "/", host, _utm(parsed.query))
        if len(url) <= _CACHE_KEY_CHARS:
            if len(_URL_INFO) >= _CACHE_SIZE:
                _URL_INFO.clear()
            _URL_INFO[url] = info
    return info


def _fast_build(obj: dict[str, Any], now_ms: int, check_lengths: bool) -> Event | None:
    """``_build`` for the common, valid event; ``None`` whenever anything is unusual.

    Rule for rule the same as ``_build``, but checks exact types instead of calling a helper
    per field, reads absent sections as empty without looking inside, and skips string
    lengths when ``check_lengths`` is false (the caller knows no string can be too long).
    It never rejects: on ``None`` the caller runs ``_build``, which finds the reason, so
    only the accepting half of each rule has to be mirrored here.
    """
    get = obj.get
    event_id = get("event_id")
    event_type = get("event_type")
    anonymous_id = get("anonymous_id", "")
    user_id = get("user_id", "")
    if (
        type(event_id) is not str
        or type(event_type) is not str
        or type(anonymous_id) is not str
        or type(user_id) is not str
        or not event_id
        or not event_type
        or not (anonymous_id or user_id)
    ):
        return None
    ts_ms = get("timestamp")
    if type(ts_ms) is str:
        ts_ms = _utc_timestamp(ts_ms)
        if ts_ms < 0:  # another spelling (or invalid): the full parser decides
            try:
                ts_ms = parse_timestamp(get("timestamp"))
            except InvalidEvent:
                return None
    elif type(ts_ms) is not int or not 0 <= ts_ms <= MAX_TS_MS:
        return None
    if ts_ms > now_ms + MAX_FUTURE_MS:
        return None
    if check_lengths and (
        len(event_id) > MAX_STRING_CHARS
        or len(event_type) > MAX_STRING_CHARS
        or len(anonymous_id) > MAX_STRING_CHARS
        or len(user_id) > MAX_STRING_CHARS
    ):
        return None

    page = get("page", _EMPTY)
    if type(page) is not dict:
        return None
    if page:
        url = page.get("url", "")
        path = page.get("path", "")
        title = page.get("title", "")
        referrer = page.get("referrer", "")
        if (
            type(url) is not str
            or type(path) is not str
            or type(title) is not str
            or type(referrer) is not str
        ):
            return None
        if check_lengths and max(len(url), len(path), len(title), len(referrer)) > MAX_STRING_CHARS:
            return None
    else:
        url = path = title = referrer = ""

    campaign = get("campaign")
    if campaign is None:
        if "campaign" in obj:
            return None
        source = medium = name = term = content = ""
    else:
        if type(campaign) is not dict:
            return None
        source = campaign.get("source", "")
        medium = campaign.get("medium", "")
        name = campaign.get("name", "")
        term = campaign.get("term", "")
        content = campaign.get("content", "")
        if (
            type(source) is not str
            or type(medium) is not str
            or type(name) is not str
            or type(term) is not str
            or type(content) is not str
        ):
            return None
        if check_lengths and (
            max(len(source), len(medium), len(name), len(term), len(content)) > MAX_STRING_CHARS
        ):
            return None

    if url:
        parsed_ok, url_path, url_host, utm = _URL_INFO.get(url) or _url_info(url)
        if parsed_ok:
            if not path:
                path = url_path
            if referrer and (_URL_INFO.get(referrer) or _url_info(referrer))[2] == url_host:
                referrer = ""  # same-host referrer: internal navigation, not a touchpoint
            if campaign is None:
                source, medium, name, term, content = utm

    props = get("properties", _EMPTY)
    if type(props) is not dict:
        return None
    if props:
        pget = props.get
        product_id = pget("product_id", "")
        category = pget("category", "")
        currency = pget("currency", "")
        order_id = pget("order_id", "")
        cart_id = pget("cart_id", "")
        if type(category) is not str or type(currency) is not str:
            return None
        # Integer ids become strings only after every check, so that converting one can
        # never raise before a rejection ``_build`` would have reported first.
        if (
            (type(product_id) is not str and type(product_id) is not int)
            or (type(order_id) is not str and type(order_id) is not int)
            or (type(cart_id) is not str and type(cart_id) is not int)
        ):
            return None
        if (
            check_lengths
            and max(
                len(category),
                len(currency),
                *(len(value) for value in (product_id, order_id, cart_id) if type(value) is str),
            )
            > MAX_STRING_CHARS
        ):
            return None
        price = pget("price")
        revenue = pget("revenue")
        score = pget("score")
        quantity = pget("quantity")
        scale = pget("scale")
        # A None here is either absent (fine) or JSON null (a rejection): ask which.
        if price is None:
            if "price" in props:
                return None
        elif (type(price) is not float and type(price) is not int) or price < 0:
            return None
        if revenue is None:
            if "revenue" in props:
                return None
        elif (type(revenue) is not float and type(revenue) is not int) or revenue < 0:
            return None
        if score is None:
            if "score" in props:
                return None
        elif type(score) is not float and type(score) is not int:
            return None
        if quantity is None:
            if "quantity" in props:
                return None
        elif type(quantity) is not int or quantity < 0:
            return None
        if scale is None:
            if "scale" in props:
                return None
        elif type(scale) is not int or (scale != 5 and scale != 10):
            return None
    else:
        product_id = category = currency = order_id = cart_id = ""
        price = revenue = score = quantity = scale = None

    context = get("context", _EMPTY)
    if type(context) is not dict:
        return None
    if context:
        user_agent = context.get("user_agent", "")
        locale = context.get("locale", "")
        device_type = context.get("device_type", "")
        if type(user_agent) is not str or type(locale) is not str or type(device_type) is not str:
            return None
        if check_lengths and max(len(user_agent), len(locale), len(device_type)) > (
            MAX_STRING_CHARS
        ):
            return None
    else:
        user_agent = locale = device_type = ""

    if props:
        if type(product_id) is int:
            product_id = str(product_id)
        if price is not None:
            price = float(price)
        if type(order_id) is int:
            order_id = str(order_id)
        if revenue is not None:
            revenue = float(revenue)
        if type(cart_id) is int:
            cart_id = str(cart_id)
        if score is not None:
            score = float(score)
    return new_event(
        event_id, event_type, ts_ms, anonymous_id or user_id, anonymous_id, user_id,
        url, path, title, referrer, source, medium, name, term, content,
        product_id, category, price, quantity, currency, order_id, revenue, cart_id,
        score, scale, device_type, user_agent, locale,
    )  # fmt: skip


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
    if not query:
        return ("", "", "", "", "")
    # A cheap pre-check before parsing: keys are matched case-insensitively below, so the
    # check is too; "clid=" covers gclid and "clkid=" covers Microsoft's msclkid.
    lowered = query.lower()
    if "utm_" not in lowered and "clid=" not in lowered and "clkid=" not in lowered:
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
