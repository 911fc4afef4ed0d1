"""Intake: one Kafka message payload in, accepted events and machine-readable rejections out.

One pass per message: msgspec decodes and type-checks the JSON into structs generated from
one field table (``_FIELDS``), which also names each rejection's reason, and ``_finish``
applies what types cannot say (timestamps, identity, integral numbers, the URL's path,
referrer and campaign) while flattening the result into an ``Event``. It follows
``schemas/event.v1.json`` rule for rule (``tests/unit/engine/test_intake_schema.py`` checks
the two agree, ``test_intake_decoder.py`` that every reason is given as an independent
reference gives it); the limits that JSON Schema cannot express (message size, batch
size, nesting depth, future timestamps) are enforced here too. Bad input is never fatal:
every problem becomes a ``Rejection`` whose ``reason`` is a stable string for the
dead-letter topic and its counter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
import orjson
from msgspec import UNSET, UnsetType

from streams.engine.events import Event
from streams.errors import JourneyError

MAX_MESSAGE_BYTES = 1024 * 1024
MAX_BATCH_EVENTS = 10_000
MAX_STRING_CHARS = 8192  # JSON Schema maxLength counts characters, so do we
MAX_DEPTH = 32
MAX_FUTURE_MS = 24 * 3600 * 1000
MAX_TS_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the schema's maximum
MAX_QUANTITY = 2**32 - 1  # the schema's maximum: raw_events.quantity is a UInt32

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
    the batch envelope, ``None`` when the message was not a batch. Under ``JOURNEY_PII``
    (``engine/pii.py``) the payload is rewritten or ``withheld``; ``size`` is then the
    original's size in bytes (``None``: the size of ``payload``).
    """

    reason: str
    payload: bytes
    index: int | None = None
    size: int | None = None
    withheld: bool = False


@dataclass(slots=True)
class IntakeResult:
    """What one message yielded: accepted events (message order) and rejections."""

    events: list[Event] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


# -- the field table -------------------------------------------------------------------------
#
# Every field of the v1 contract, once: (section or None for the top level, key, kind). The
# kind gives the field's msgspec type and default (``_KINDS``), and so its rejection
# reasons (``_reason``); the decoding structs below are generated from this table, and
# ``_finish`` applies the rules msgspec cannot express. JSON Schema counts 2.0 as an
# integer, so fields that take integers also decode floats, and ``_finish`` keeps the
# integral ones.
_FIELDS: tuple[tuple[str | None, str, str], ...] = (
    (None, "event_id", "id"),
    (None, "event_type", "id"),
    (None, "timestamp", "timestamp"),
    (None, "anonymous_id", "text"),
    (None, "user_id", "text"),
    ("page", "url", "text"),
    ("page", "path", "text"),
    ("page", "title", "text"),
    ("page", "referrer", "text"),
    ("campaign", "source", "text"),
    ("campaign", "medium", "text"),
    ("campaign", "name", "text"),
    ("campaign", "term", "text"),
    ("campaign", "content", "text"),
    ("properties", "product_id", "text_or_int"),
    ("properties", "category", "text"),
    ("properties", "price", "amount"),
    ("properties", "quantity", "count"),
    ("properties", "currency", "text"),
    ("properties", "order_id", "text_or_int"),
    ("properties", "revenue", "amount"),
    ("properties", "cart_id", "text_or_int"),
    ("properties", "score", "number"),
    ("properties", "scale", "scale"),
    ("context", "user_agent", "text"),
    ("context", "locale", "text"),
    ("context", "device_type", "text"),
)
_Text = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)]
_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_CHARS)]
_Amount = Annotated[float, msgspec.Meta(ge=0)]
#: kind -> (msgspec type, default). UNSET marks "absent", which JSON null is not: a null
#: where a value is expected is a type error (``bad_field``), as in the schema.
_KINDS: dict[str, tuple[Any, Any]] = {
    "id": (_Id | UnsetType, UNSET),
    "timestamp": (str | int | float | UnsetType, UNSET),
    "text": (_Text, ""),
    "text_or_int": (_Text | int | float, ""),
    "amount": (_Amount | UnsetType, UNSET),
    "number": (float | UnsetType, UNSET),
    "count": (int | float | UnsetType, UNSET),
    "scale": (int | float | UnsetType, UNSET),
}
#: Reasons other than ``bad_field:<path>`` for a value failing its kind's constraint.
_CONSTRAINT_REASONS = {
    "properties.price": "negative_price",
    "properties.revenue": "negative_revenue",
}
_KIND_OF = {f"{section}.{key}" if section else key: kind for section, key, kind in _FIELDS}
#: Dead-letter reason of an event whose visitor hashes to another partition than the one it
#: came in, when the worker takes its input directly (JOURNEY_INPUT_KEYED_BY_VISITOR). The
#: worker gives it, not this module; it is here so that every reason is listed in one place.
NOT_KEYED_BY_VISITOR = "not_keyed_by_visitor"
#: A decoded document (``parse_event_dict``) with a field that is not Unicode text: a CSV
#: cell whose bytes were not UTF-8, or a lone surrogate (JSON text gives invalid_json).
NOT_UTF8 = "not_utf8"
#: A row of ``journey replay --format csv`` that the csv module cannot split.
INVALID_CSV = "invalid_csv"
#: Every reason a rejection can carry: the message-level ones, and per field of the table
#: those its kind can fail with. A fixed set, so the reason is a bounded metric label.
REJECTION_REASONS: frozenset[str] = frozenset(
    {
        "message_too_large", "batch_too_large", "invalid_json", "not_an_object", "too_deep",
        "missing_identity", "bad_timestamp", "future_timestamp", NOT_KEYED_BY_VISITOR,
        NOT_UTF8, INVALID_CSV,
        *_CONSTRAINT_REASONS.values(),
        *(f"bad_field:{name}" for name in ("batch", "page", "campaign", "properties", "context")),
        *(f"bad_field:{path}" for path in _KIND_OF),
        *(f"missing_field:{path}" for path, kind in _KIND_OF.items()
          if kind in ("id", "timestamp")),
        *(f"field_too_long:{path}" for path, kind in _KIND_OF.items()
          if kind in ("id", "text", "text_or_int")),
    }
)  # fmt: skip


def _struct(name: str, fields: list[tuple[str, str]], extra: Sequence[Any] = ()) -> Any:
    spec = [(key, *_KINDS[kind]) for key, kind in fields]
    # frozen: an empty section is a shared default; gc: the decoded values hold no cycles.
    return msgspec.defstruct(name, [*spec, *extra], frozen=True, gc=False)


_SECTIONS = {
    section: _struct(f"_{section.title()}", [(k, kind) for s, k, kind in _FIELDS if s == section])
    for section in ("page", "campaign", "properties", "context")
}
_PAGE_NONE = _SECTIONS["page"]()
_PROPERTIES_NONE = _SECTIONS["properties"]()
_CONTEXT_NONE = _SECTIONS["context"]()
_TOP = [(k, kind) for s, k, kind in _FIELDS if s is None]
_SECTION_FIELDS = [
    ("page", _SECTIONS["page"], _PAGE_NONE),
    # Present, a campaign replaces utm_* of the URL even when empty, so absent is UNSET.
    ("campaign", _SECTIONS["campaign"] | UnsetType, UNSET),
    ("properties", _SECTIONS["properties"], _PROPERTIES_NONE),
    ("context", _SECTIONS["context"], _CONTEXT_NONE),
]
_EventDoc = _struct("_EventDoc", _TOP, _SECTION_FIELDS)
#: A message: one event, or an envelope whose ``batch`` holds the elements undecoded.
_Message = _struct(
    "_Message", _TOP, [*_SECTION_FIELDS, ("batch", list[msgspec.Raw] | UnsetType, UNSET)]
)


class _Envelope(msgspec.Struct, frozen=True, gc=False):
    """A batch envelope whose other members do not matter (they may be anything)."""

    batch: list[msgspec.Raw]


_decode_message = msgspec.json.Decoder(_Message).decode
_decode_event = msgspec.json.Decoder(_EventDoc).decode
_decode_envelope = msgspec.json.Decoder(_Envelope).decode
#: What decoding raises for bad input: msgspec's errors, and a string member that is not
#: UTF-8 (msgspec raises Python's own error for it, not a ``DecodeError``).
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)
#: ``msgspec: message - at `$.path``` (the path is absent for the document itself).
_AT = " - at `$"


def parse_payload(payload: bytes, now_ms: int) -> IntakeResult:
    """Decode one Kafka message (one event or ``{"batch": [...]}``) and validate each event.

    ``now_ms`` is the injected wall clock used only for the future-timestamp check.
    One pass: msgspec decodes and type-checks the message into structs generated from
    the field table, then :func:`_finish` applies the remaining rules.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        return IntakeResult([], [Rejection("message_too_large", payload)])
    error: msgspec.DecodeError | UnicodeDecodeError | None = None
    try:
        doc = _decode_message(payload)
    except _DECODE_ERRORS as exc:
        doc, error = None, exc
    if doc is not None and doc.batch is not UNSET:
        elements: list[msgspec.Raw] | str | None = doc.batch
    else:
        # An envelope is an envelope whatever its other members hold.
        elements = None if error is None else _envelope(payload)
    if isinstance(elements, str):
        return IntakeResult([], [Rejection(elements, payload)])
    if elements is None:  # one event
        try:
            if not _shallow(payload, MAX_DEPTH):
                _check_depth(payload, MAX_DEPTH)
            if doc is None:
                raise InvalidEvent(_reason(error))  # type: ignore[arg-type]
            return IntakeResult([_finish(doc, now_ms)], [])
        except InvalidEvent as exc:
            return IntakeResult([], [Rejection(exc.reason, payload)])
    if len(elements) > MAX_BATCH_EVENTS:
        return IntakeResult([], [Rejection("batch_too_large", payload)])
    result = IntakeResult()
    for index, element in enumerate(elements):
        raw = bytes(element)
        try:
            # The envelope object and its list are two levels above each element.
            if not _shallow(raw, MAX_DEPTH - 2):
                _check_depth(raw, MAX_DEPTH - 2)
            result.events.append(_finish(_decode_event(raw), now_ms))
        except InvalidEvent as exc:
            result.rejections.append(Rejection(exc.reason, raw, index))
        except _DECODE_ERRORS as exc:
            result.rejections.append(Rejection(_reason(exc), raw, index))
    return result


def parse_event_dict(obj: Mapping[str, Any], now_ms: int) -> Event:
    """Validate one already-decoded event (a JSONL or CSV line in replay) into an ``Event``.

    Raises ``InvalidEvent`` (with ``.reason``) when the event is not acceptable.
    """
    if not isinstance(obj, Mapping):
        raise InvalidEvent("not_an_object")
    if _depth(obj) > MAX_DEPTH:
        raise InvalidEvent("too_deep")
    try:
        doc = msgspec.convert(obj if type(obj) is dict else dict(obj), _EventDoc)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(_reason(exc)) from None
    except UnicodeEncodeError:  # msgspec quoting a lone surrogate in its error message
        raise InvalidEvent(NOT_UTF8) from None
    props = doc.properties
    if props is not _PROPERTIES_NONE:
        # JSON holds no NaN or infinity, so parse_payload never meets one; a dict may.
        for key in ("price", "revenue", "score"):
            value = getattr(props, key)
            if value is not UNSET and not math.isfinite(value):
                raise InvalidEvent(f"bad_field:properties.{key}")
    event = _finish(doc, now_ms)
    try:
        _check_text(event)  # a lone surrogate would stop every later encoding of the event
    except UnicodeEncodeError:
        raise InvalidEvent(NOT_UTF8) from None
    return event


_check_text = msgspec.json.Encoder().encode


def _shallow(payload: bytes, limit: int) -> bool:
    """True when the JSON cannot nest deeper than ``limit`` (counted in C, an upper bound)."""
    return payload.count(b"{") + payload.count(b"[") <= limit


def _check_depth(payload: bytes, limit: int) -> None:
    """Raise ``too_deep`` when the JSON nests deeper than ``limit`` (invalid JSON passes)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return  # the decoder reports it
    if _depth(obj) > limit:
        raise InvalidEvent("too_deep")


def _envelope(payload: bytes) -> list[msgspec.Raw] | str | None:
    """The elements of an envelope whose other members failed to decode, a reason, or None.

    None: not an envelope. A reason: an envelope whose ``batch`` is not a list.
    """
    if b'"batch"' not in payload:
        return None
    try:
        return list(_decode_envelope(payload).batch)
    except msgspec.ValidationError as exc:
        return "bad_field:batch" if _path(exc) == "batch" else None
    except _DECODE_ERRORS:
        return None


def _path(exc: msgspec.DecodeError) -> str | None:
    """The dotted path msgspec names in its error (``page.url``), ``""`` for the document."""
    text = str(exc)
    at = text.rfind(_AT)
    if at < 0:
        return "" if isinstance(exc, msgspec.ValidationError) else None
    return text[at + len(_AT) :].strip("`.")


def _reason(exc: msgspec.DecodeError | UnicodeDecodeError) -> str:
    """The dead-letter reason of a msgspec error, from the field table."""
    if not isinstance(exc, msgspec.ValidationError) or str(exc).startswith("Number out of range"):
        return "invalid_json"  # not UTF-8, or a number neither an integer nor a float holds
    path = _path(exc)
    if not path:
        return "not_an_object"
    kind = _KIND_OF.get(path)
    if kind is None:  # a section that is not an object
        return f"bad_field:{path}"
    if kind == "timestamp":
        return "bad_timestamp"
    text = str(exc)
    if "of length <=" in text:
        return f"field_too_long:{path}"
    if "of length >=" in text:
        return f"missing_field:{path}"
    if kind == "amount" and ">=" in text:
        return _CONSTRAINT_REASONS[path]
    return f"bad_field:{path}"


def _whole(value: int | float, name: str) -> int:
    """An integer field's value; a float only when integral (JSON Schema's integer)."""
    if type(value) is float:
        if not value.is_integer():
            raise InvalidEvent(f"bad_field:{name}")
        return int(value)
    return value  # type: ignore[return-value]


def _id_text(value: str | int | float, name: str) -> str:
    """A text-or-integer id as text."""
    if isinstance(value, str):
        return value
    return str(_whole(value, name))


def _finish(doc: Any, now_ms: int) -> Event:
    """The rules msgspec cannot express, then the flat ``Event``; raises ``InvalidEvent``."""
    event_id = doc.event_id
    if event_id is UNSET:
        raise InvalidEvent("missing_field:event_id")
    event_type = doc.event_type
    if event_type is UNSET:
        raise InvalidEvent("missing_field:event_type")
    ts = doc.timestamp
    if ts is UNSET:
        raise InvalidEvent("missing_field:timestamp")
    if type(ts) is str:
        ts_ms = _utc_timestamp(ts)
        if ts_ms < 0:  # another spelling (or invalid): the full parser decides
            ts_ms = parse_timestamp(ts)
    else:
        ts_ms = parse_timestamp(ts)
    anonymous_id = doc.anonymous_id
    user_id = doc.user_id
    if not anonymous_id and not user_id:
        raise InvalidEvent("missing_identity")

    page = doc.page
    url, path, referrer = page.url, page.path, page.referrer
    campaign = doc.campaign
    if campaign is UNSET:
        source = medium = name = term = content = ""
    else:
        source, medium, name = campaign.source, campaign.medium, campaign.name
        term, content = campaign.term, campaign.content
    if url:
        parsed_ok, url_path, url_host, utm = _URL_INFO.get(url) or _url_info(url)
        if parsed_ok:
            if not path:
                path = url_path
            if referrer and (_URL_INFO.get(referrer) or _url_info(referrer))[2] == url_host:
                referrer = ""  # same-host referrer: internal navigation, not a touchpoint
            if campaign is UNSET:
                source, medium, name, term, content = utm

    props = doc.properties
    if props is _PROPERTIES_NONE:
        product_id = category = currency = order_id = cart_id = ""
        price = revenue = score = None
        quantity = scale = None
    else:
        product_id = _id_text(props.product_id, "properties.product_id")
        order_id = _id_text(props.order_id, "properties.order_id")
        cart_id = _id_text(props.cart_id, "properties.cart_id")
        category, currency = props.category, props.currency
        price = None if props.price is UNSET else props.price
        revenue = None if props.revenue is UNSET else props.revenue
        score = None if props.score is UNSET else props.score
        quantity = None
        if props.quantity is not UNSET:
            quantity = _whole(props.quantity, "properties.quantity")
            # Bounded: a quantity of 2**64 or more cannot be written to the changelog
            # (msgpack) or the late topic (orjson), and stopped the worker at a checkpoint.
            if quantity < 0 or quantity > MAX_QUANTITY:
                raise InvalidEvent("bad_field:properties.quantity")
        scale = None
        if props.scale is not UNSET:
            scale = _whole(props.scale, "properties.scale")
            if scale != 5 and scale != 10:
                raise InvalidEvent("bad_field:properties.scale")
    context = doc.context
    if ts_ms > now_ms + MAX_FUTURE_MS:
        raise InvalidEvent("future_timestamp")
    return Event(
        event_id, event_type, ts_ms, anonymous_id or user_id, anonymous_id, user_id,
        url, path, page.title, referrer, source, medium, name, term, content,
        product_id, category, price, quantity, currency, order_id, revenue, cart_id,
        score, scale, context.device_type, context.user_agent, context.locale,
    )  # fmt: skip


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
