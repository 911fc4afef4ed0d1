"""Hostile input: seeded generated inputs never break the parsers of external input.

``parse_payload`` (every Kafka message the worker takes, every JSONL line of a replay)
gets 50,000 generated messages: random bytes, real events (the generator's traffic and the
OTTO fixture) mutated field by field and byte by byte, and JSON-shaped messages with wrong
types, missing fields, huge numbers, NaN/Infinity, deep nesting, odd unicode and overlong
strings, alone or in batch envelopes. The CSV reader of ``journey replay`` (with
``--map``) gets 12,000 generated rows, and ``parse_event_dict`` (which it calls) 10,000
decoded documents holding what JSON cannot (NaN, infinity, lone surrogates). Whatever
comes in, nothing raises, every rejection
carries a reason of the contract's fixed set, and every accepted event is a document
``schemas/event.v1.json`` accepts (checked with jsonschema on the input as Python's own
``json`` reads it, never by our decoder), carries the document's values, and survives
every encoding the worker puts it through (by-visitor topic, late topic, changelog).

The oracle here is independent of the intake: the reason set is built from the schema file
and the SPEC's list, the documents are decoded by the standard library.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
from jsonschema import Draft202012Validator

from streams.engine.events import Event
from streams.engine.intake import (
    REJECTION_REASONS,
    InvalidEvent,
    parse_event_dict,
    parse_payload,
)
from streams.engine.sessionizer import SessionConfig
from streams.engine.stages import StageRules
from streams.engine.state import VisitorState, stored
from streams.generator.traffic import TrafficConfig, TrafficModel
from streams.replay import CSV_FIELDS, replay_files

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "schemas" / "event.v1.json").read_text(encoding="utf-8"))
OTTO = ROOT / "tests" / "integration" / "replay" / "data" / "otto" / "train_fixture.jsonl"
SEED = 20_261_128
MESSAGES = 50_000
NOW = 1_717_243_200_000  # 2024-06-01T12:00:00Z: the generated traffic starts that day
DAY_MS = 86_400_000


# -- the oracle ----------------------------------------------------------------------------


def _resolve(sub: dict[str, Any]) -> dict[str, Any]:
    ref = sub.get("$ref")
    if ref is None:
        return sub
    resolved: dict[str, Any] = SCHEMA
    for part in ref.removeprefix("#/").split("/"):
        resolved = resolved[part]
    return resolved


def _text_limited(sub: dict[str, Any]) -> bool:
    """Whether the field is text with the contract's 8 KiB limit (ids, text, text-or-int)."""
    sub = _resolve(sub)
    return sub.get("maxLength") == 8192 or any(
        alt.get("maxLength") == 8192 for alt in sub.get("oneOf", ())
    )


def known_reasons() -> frozenset[str]:
    """Every rejection reason the contract names, built from the schema file and the SPEC.

    Message-level reasons are the SPEC's (section 3) and the worker's direct-mode one; per
    field of the schema a wrong type is ``bad_field:<path>``, a required one absent or
    empty ``missing_field:<path>``, text over 8 KiB ``field_too_long:<path>``; the CSV
    reader adds ``invalid_csv``, and a decoded document ``not_utf8`` for a lone surrogate.
    """
    reasons = {
        "invalid_json", "not_an_object", "message_too_large", "batch_too_large", "too_deep",
        "missing_identity", "bad_timestamp", "future_timestamp", "negative_price",
        "negative_revenue", "not_keyed_by_visitor", "not_utf8", "invalid_csv", "bad_field:batch",
    }  # fmt: skip
    reasons |= {f"missing_field:{name}" for name in SCHEMA["required"]}
    for key, sub in SCHEMA["properties"].items():
        reasons.add(f"bad_field:{key}")
        if _text_limited(sub):
            reasons.add(f"field_too_long:{key}")
        for inner, inner_sub in sub.get("properties", {}).items():
            reasons.add(f"bad_field:{key}.{inner}")
            if _text_limited(inner_sub):
                reasons.add(f"field_too_long:{key}.{inner}")
    return frozenset(reasons)


def _inlined(node: Any) -> Any:
    """The schema with each ``$ref`` to ``$defs`` replaced by its target (same meaning).

    jsonschema resolves a reference on every use, three quarters of the validation time
    here; the event schema's references are not recursive, so inlining them is exact.
    """
    if isinstance(node, list):
        return [_inlined(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _inlined(value) for key, value in node.items() if key not in ("$ref", "$defs")}
    if "$ref" in node:
        out = {**_inlined(_resolve(node)), **out}
    return out


VALIDATOR = Draft202012Validator(_inlined(SCHEMA))
KNOWN_REASONS = known_reasons()
#: Rejections of a document the schema accepts: the limits JSON Schema cannot express
#: (size, depth, the calendar, the clock), as the schema's description lists them.
LIMIT_REASONS = {
    "message_too_large", "batch_too_large", "too_deep", "bad_timestamp", "future_timestamp",
}  # fmt: skip


class Undecodable(ValueError):
    """Input that the standard library's JSON reading cannot take."""


class Unusual:
    """What stands for NaN/Infinity (not JSON) or a fraction beyond a double: no JSON type."""

    def __init__(self, text: str) -> None:
        self.text = text[:20]

    def __repr__(self) -> str:
        return f"Unusual({self.text!r})"


def _float(text: str) -> float | Unusual:
    value = float(text)
    return value if math.isfinite(value) else Unusual(text)


class _Members(dict[str, Any]):
    """An object read from JSON that noted whether a member name came twice."""

    duplicated = False


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = _Members(pairs)
    obj.duplicated = len(obj) != len(pairs)
    return obj


def _is_text(value: Any) -> bool:
    """Whether every string in ``value`` is Unicode text (no lone surrogate)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON without doubt: text, numbers a double holds, unique names."""
    if isinstance(value, str):
        return _is_text(value)
    if isinstance(value, dict):
        return not getattr(value, "duplicated", False) and all(
            _is_text(k) and _is_plain(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        return False  # exact as an integer, but no number field can hold it
    return not isinstance(value, Unusual)


def decode_document(payload: bytes) -> tuple[Any, bool]:
    """The message as Python's ``json`` reads it, and whether it is plain (``_is_plain``).

    Bytes that are not UTF-8 are read as lone surrogates (``surrogateescape``), as are
    ``\\ud800``-style escapes, NaN, Infinity and fractions beyond a double as ``Unusual``
    (integers stay exact), and a repeated member name keeps its last value. A document
    that is not plain is not interoperable JSON (RFC 8259 sections 4, 6 and 8): the intake
    may refuse it, or accept it when only members it ignores are unusual. Raises
    ``Undecodable`` for what is not JSON.
    """
    try:
        doc = json.loads(
            payload.decode("utf-8", "surrogateescape"),
            object_pairs_hook=_object,
            parse_constant=Unusual,
            parse_float=_float,
        )
    except (ValueError, RecursionError) as exc:
        raise Undecodable(str(exc)[:80]) from None
    return doc, _is_plain(doc)


def _expected_ts(value: Any) -> int:
    """Epoch ms of a timestamp the schema accepts, computed with ``datetime``."""
    if not isinstance(value, str):
        return int(value)
    head, frac, zone = re.fullmatch(
        r"(\d{4}-\d\d-\d\d.\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)", value
    ).groups()  # type: ignore[union-attr]
    leap = head.endswith(":60")
    stamp = f"{head[:10]}T{head[11:17]}{'59' if leap else head[17:]}"
    offset = "+00:00" if zone in "Zz" else zone
    moment = datetime.fromisoformat(stamp + offset) + timedelta(seconds=1 if leap else 0)
    millis = int((frac or ".0")[1:4].ljust(3, "0"))
    return int(moment.timestamp()) * 1000 + millis


def _id_text(value: Any) -> str:
    return str(int(value)) if isinstance(value, int | float) else value


def _amount(value: Any) -> float | None:
    """A number field as the event holds it: a double (an integer is rounded to one)."""
    return None if value is None else float(value)


def event_mismatch(event: Event, doc: dict[str, Any]) -> str | None:
    """The first field where the accepted event differs from its document, else None."""
    page, props = doc.get("page", {}), doc.get("properties", {})
    ctx, anon, user = doc.get("context", {}), doc.get("anonymous_id", ""), doc.get("user_id", "")
    expected = {
        "event_id": doc["event_id"], "event_type": doc["event_type"],
        "ts_ms": _expected_ts(doc["timestamp"]), "visitor_key": anon or user,
        "anonymous_id": anon, "user_id": user, "page_url": page.get("url", ""),
        "page_title": page.get("title", ""), "product_id": _id_text(props.get("product_id", "")),
        "order_id": _id_text(props.get("order_id", "")),
        "cart_id": _id_text(props.get("cart_id", "")), "category": props.get("category", ""),
        "currency": props.get("currency", ""), "price": _amount(props.get("price")),
        "revenue": _amount(props.get("revenue")), "score": _amount(props.get("score")),
        "quantity": props.get("quantity"), "scale": props.get("scale"),
        "user_agent": ctx.get("user_agent", ""), "locale": ctx.get("locale", ""),
        "device_type": ctx.get("device_type", ""),
    }  # fmt: skip
    if page.get("path"):
        expected["page_path"] = page["path"]
    for name, want in expected.items():
        got = getattr(event, name)
        if got != want or (want is not None and isinstance(got, bool) != isinstance(want, bool)):
            return f"{name}: event has {got!r}, document {want!r}"
    return None


def as_document(event: Event) -> dict[str, Any]:
    """The accepted event written back as a v1 document (what it claims the input was)."""
    sections = {
        "page": {"url": event.page_url, "path": event.page_path, "title": event.page_title,
                 "referrer": event.referrer},
        "campaign": {"source": event.campaign_source, "medium": event.campaign_medium,
                     "name": event.campaign_name, "term": event.campaign_term,
                     "content": event.campaign_content},
        "properties": {"product_id": event.product_id, "category": event.category,
                       "price": event.price, "quantity": event.quantity,
                       "currency": event.currency, "order_id": event.order_id,
                       "revenue": event.revenue, "cart_id": event.cart_id,
                       "score": event.score, "scale": event.scale},
        "context": {"user_agent": event.user_agent, "locale": event.locale,
                    "device_type": event.device_type},
    }  # fmt: skip
    doc: dict[str, Any] = {
        "event_id": event.event_id, "event_type": event.event_type, "timestamp": event.ts_ms,
    }  # fmt: skip
    if event.anonymous_id:
        doc["anonymous_id"] = event.anonymous_id
    if event.user_id:
        doc["user_id"] = event.user_id
    for name, fields in sections.items():
        doc[name] = {k: v for k, v in fields.items() if v is not None}
    return doc


def accepted_event_problem(event: Event) -> str | None:
    """Why an accepted event is not a valid v1 event or breaks the worker's encodings."""
    doc = as_document(event)
    try:
        json.dumps(doc, allow_nan=False)
    except ValueError as exc:
        return f"not representable in JSON: {exc}"
    if not _is_plain(doc):
        return "a field is not Unicode text"
    if not VALIDATOR.is_valid(doc):
        return f"violates the schema: {next(iter(VALIDATOR.iter_errors(doc))).message[:120]}"
    if not 0 <= event.ts_ms <= NOW + DAY_MS:
        return f"timestamp {event.ts_ms} outside [0, now + 24 h]"
    try:
        if msgspec.json.decode(msgspec.json.encode(event), type=Event) != event:
            return "changed by the by-visitor encoding"
        orjson.dumps(event.to_dict())  # the late topic's and the dead-letter's form
        state = VisitorState(event.visitor_key, [stored(event)])
        if VisitorState.from_bytes(state.to_bytes(), event.visitor_key) != state:
            return "changed by the changelog encoding"
    except Exception as exc:  # any failure here is the finding
        return f"breaks an encoding: {exc!r}"
    return None


def check_message(payload: bytes, problems: list[str]) -> tuple[int, int]:
    """Run one message through ``parse_payload``; record what breaks the contract.

    Returns (accepted, rejected) counts.
    """
    shown = payload[:160]
    try:
        result = parse_payload(payload, NOW)
    except Exception as exc:  # any exception is the finding
        problems.append(f"raised {exc!r} on {shown!r}")
        return 0, 0
    for rejection in result.rejections:
        if rejection.reason not in KNOWN_REASONS:
            problems.append(f"unknown reason {rejection.reason!r} on {shown!r}")
    try:
        doc, plain = decode_document(payload)
    except Undecodable as exc:
        if result.events:
            problems.append(f"accepted {len(result.events)} of undecodable {shown!r}: {exc}")
        return len(result.events), len(result.rejections)
    # A message with a batch member is an envelope, whatever its other members hold.
    batch = isinstance(doc, dict) and "batch" in doc
    elements = doc["batch"] if batch else [doc]
    if batch and (
        not isinstance(elements, list) or any(r.index is None for r in result.rejections)
    ):
        # The envelope refused as a whole: a batch that is no list, or a size limit.
        readable = plain and isinstance(elements, list) and len(elements) <= 10_000
        if result.events or len(result.rejections) != 1:
            problems.append(f"envelope refused, yet events or more rejections: {shown!r}")
        elif readable and len(payload) <= 1024 * 1024:
            reason = result.rejections[0].reason
            problems.append(f"a readable envelope refused as {reason}: {shown!r}")
        return len(result.events), len(result.rejections)
    rejected = {r.index if batch else 0: r.reason for r in result.rejections}
    accepted = [i for i in range(len(elements)) if i not in rejected]
    if len(accepted) != len(result.events) or len(rejected) != len(result.rejections):
        problems.append(f"{len(result.events)} accepted, {len(rejected)} rejected of {shown!r}")
        return len(result.events), len(result.rejections)
    for index, event in zip(accepted, result.events, strict=True):
        element = elements[index]
        error = next(iter(VALIDATOR.iter_errors(element)), None)
        if error is not None:
            where = "/".join(map(str, error.absolute_path))
            problems.append(f"accepted {shown!r} [{index}], invalid at {where}: {error.message}")
            continue
        problem = accepted_event_problem(event) or event_mismatch(event, element)
        if problem:
            problems.append(f"accepted {shown!r} [{index}]: {problem}")
    for index, reason in rejected.items():
        element = elements[index]
        if reason not in LIMIT_REASONS and _is_plain(element) and VALIDATOR.is_valid(element):
            problems.append(f"rejected a valid document as {reason}: {shown!r} [{index}]")
    return len(result.events), len(result.rejections)


# -- the generators ----------------------------------------------------------------------


def real_events() -> list[dict[str, Any]]:
    """Events of the traffic generator and of the OTTO fixture (mapped as its README says)."""
    model = TrafficModel(
        TrafficConfig(max_events=400), random.Random(SEED), datetime(2024, 6, 1, tzinfo=UTC)
    )
    events = [message.event for message in model if message.event is not None]
    kinds = {"clicks": "product_view", "carts": "add_to_cart", "orders": "purchase"}
    with OTTO.open(encoding="utf-8") as lines:
        for line in lines:
            session = json.loads(line)
            for n, ev in enumerate(session["events"][:40]):
                events.append({
                    "event_id": f"otto-{session['session']}-{n}",
                    "event_type": kinds[ev["type"]],
                    "timestamp": ev["ts"],
                    "anonymous_id": str(session["session"]),
                    "properties": {"product_id": ev["aid"]},
                })  # fmt: skip
    return events


#: JSON text placed as is where a value goes: numbers beyond a double, non-JSON constants,
#: odd escapes, invalid tokens.
RAW_TOKENS = (
    "NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400, "1e-400", "-0",
    "01", "1.", ".5", "+1", "0x10", "1e", '"\\ud800"', '"\\udc00\\ud800"', '"a\\u0000b"',
    '"\\uD83D\\uDE00"', '"\\x41"', '"\t"', '"\\u00"', "tru", "nul", "[1,]", "{,}", '{"a"}',
    "1" * 30, "-" + "9" * 25, "1.7e12", "17e11", "2e9", "4294967295", "4294967296",
    "18446744073709551616", "-9223372036854775809",
)  # fmt: skip
HOSTILE_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 7, 1.5, -0.0, 2.0, 10.0, 5, 2**31, 2**32, 2**63, 2**64, 10**30,
    -(10**30), 1e308, -1e308, 5e-324, 1717243200000, 1717243200000.0, 253402300799999,
    253402300800000, "", " ", "x" * 8192, "x" * 8193, "é" * 8192, "é" * 8193, "😀" * 8192,
    "😀" * 8193, "\u0000", "\ufeff", "\u202eevil", "a\u0301", "\u2028", "𝔘𝔫𝔦", "٣", "²",
    "NaN", "Infinity", "-1", "1e400", [], [1], {}, {"a": {}}, {"url": 3},
    "2024-02-30T00:00:00Z", "2024-02-29T23:59:60Z", "2023-02-29T00:00:00Z",
    "2024-06-01T00:00:60.5+01:00", "1970-01-01T00:00:00Z", "1970-01-01T00:30:00+01:00",
    "1969-12-31T23:59:59Z", "2024-06-01T12:00:00+24:00", "2024-06-01T12:00:00-00:60",
    "9999-12-31T23:59:59.999Z", "9999-12-31T23:59:59.999-01:00", "2024-06-01t12:00:00z",
    "2024-06-01 12:00:00.123456789Z", "2024-06-01T12:00:00", "2024-06-01T12:00:00.Z",
    "2024-06-01T12:00:00.000+00:00", "٢٠٢٤-06-01T12:00:00Z", "2024-06-01T12:00:00.000Z" * 3,
    "https://shop.example.com/p?utm_source=x&utm_medium=y&gclid=1",
    "https://[::1/p", "http://a:b@host:99999/", "//host/path", "javascript:alert(1)",
)  # fmt: skip
PATHS = (
    "event_id", "event_type", "timestamp", "anonymous_id", "user_id", "page", "page.url",
    "page.path", "page.title", "page.referrer", "campaign", "campaign.source", "campaign.name",
    "properties", "properties.product_id", "properties.price", "properties.quantity",
    "properties.order_id", "properties.revenue", "properties.cart_id", "properties.score",
    "properties.scale", "properties.currency", "context", "context.user_agent",
    "context.device_type", "batch", "extra", "ÿ",
)  # fmt: skip
BAD_UTF8 = (b"\xc0\xaf", b"\x80", b"\xed\xa0\x80", b"\xf5\x80\x80\x80", b"\xff", b"\xe2\x82")


class Raw:
    """JSON text to put as is where a value goes (see ``dumps``)."""

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(obj: Any, rng: random.Random) -> bytes:
    """JSON of ``obj`` with ``Raw`` values written as their text, ASCII-escaped or not."""
    raws: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value.text)
            return f"\x00RAW{len(raws) - 1}\x00"
        if isinstance(value, dict):
            return {k: mark(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mark(v) for v in value]
        return value

    text = json.dumps(mark(obj), ensure_ascii=rng.random() < 0.3)
    for n, raw in enumerate(raws):
        text = text.replace(f'"\\u0000RAW{n}\\u0000"', raw, 1)
    return text.encode("utf-8", "surrogatepass")


def nested(rng: random.Random, depth: int) -> Any:
    """A value nested ``depth`` levels deep, arrays and objects mixed."""
    value: Any = rng.choice([1, "x", None, [], {}])
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"k": value}
    return value


def hostile_value(rng: random.Random) -> Any:
    """A value of the wrong type, at a bound, odd, deep, or raw JSON text."""
    roll = rng.random()
    if roll < 0.2:
        return Raw(rng.choice(RAW_TOKENS))
    if roll < 0.27:
        return nested(rng, rng.randint(1, 40))
    if roll < 0.32:
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 12)))
    return rng.choice(HOSTILE_VALUES)


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    head, _, tail = path.partition(".")
    if not tail:
        doc[head] = value
        return
    section = doc.get(head)
    if not isinstance(section, dict):
        section = doc[head] = {}
    section[tail] = value


def delete_path(doc: dict[str, Any], path: str) -> None:
    head, _, tail = path.partition(".")
    if tail and isinstance(doc.get(head), dict):
        doc[head].pop(tail, None)
    elif not tail:
        doc.pop(head, None)


def mutated(rng: random.Random, seeds: list[dict[str, Any]]) -> Any:
    """A real event (a deep copy) with one to four fields removed, retyped or added."""
    doc = json.loads(json.dumps(rng.choice(seeds)))
    for _ in range(rng.randint(1, 4)):
        roll, path = rng.random(), rng.choice(PATHS)
        if roll < 0.25:
            delete_path(doc, path)
        elif roll < 0.9:
            set_path(doc, path, hostile_value(rng))
        else:
            doc[rng.choice(["", "é", "\u0000", "event_id ", "x" * 300])] = hostile_value(rng)
    return doc


def envelope(rng: random.Random, seeds: list[dict[str, Any]]) -> Any:
    """A batch envelope of valid, mutated and odd elements, sometimes malformed itself."""
    count = rng.choice([0, 1, 2, 3, 5, 8, 20])
    elements = [
        rng.choice(seeds) if rng.random() < 0.4 else
        mutated(rng, seeds) if rng.random() < 0.85 else hostile_value(rng)
        for _ in range(count)
    ]  # fmt: skip
    doc: dict[str, Any] = {"batch": elements}
    if rng.random() < 0.15:
        doc["sentAt"] = hostile_value(rng)
    if rng.random() < 0.05:
        doc["batch"] = hostile_value(rng)
    if rng.random() < 0.05:
        doc.update(rng.choice(seeds))
    return doc


def byte_mutated(rng: random.Random, payload: bytes) -> bytes:
    """``payload`` with one to three byte-level edits: flips, inserts, cuts, bad UTF-8."""
    data = bytearray(payload)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        roll = rng.random()
        if roll < 0.25 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif roll < 0.45:
            data[at:at] = rng.choice(BAD_UTF8)
        elif roll < 0.6:
            data[at:at] = bytes(rng.choice(b'{}[]",:\\0123456789.-eE \x00') for _ in range(3))
        elif roll < 0.75:
            del data[at : at + rng.randint(1, 8)]
        elif roll < 0.85:
            data = data[:at]
        elif roll < 0.92:
            data = bytearray(b"\xef\xbb\xbf") + data
        else:
            data[at:at] = data[max(0, at - 20) : at]
    return bytes(data)


def duplicated_key(rng: random.Random, payload: bytes) -> bytes:
    """A repeated member right after the first ``{``: JSON keeps the last occurrence."""
    key = rng.choice(["event_id", "timestamp", "anonymous_id", "batch", "page", "properties"])
    member = b'"%s":%s,' % (key.encode(), dumps(hostile_value(rng), rng))
    at = payload.find(b"{")
    return payload if at < 0 else payload[: at + 1] + member + payload[at + 1 :]


def messages(rng: random.Random, seeds: list[dict[str, Any]]) -> Iterator[bytes]:
    """``MESSAGES`` generated messages, a fixed mix of every kind."""
    kinds: list[tuple[float, Callable[[], bytes]]] = [
        (0.14, lambda: rng.randbytes(rng.choice([0, 1, 2, 5, 16, 64, 300]))),
        (0.04, lambda: b"{" + rng.randbytes(rng.randint(0, 80)) + b"}"),
        (0.06, lambda: dumps(rng.choice(seeds), rng)),
        (0.34, lambda: dumps(mutated(rng, seeds), rng)),
        (0.16, lambda: byte_mutated(rng, dumps(rng.choice(seeds), rng))),
        (0.10, lambda: dumps(envelope(rng, seeds), rng)),
        (0.05, lambda: duplicated_key(rng, dumps(mutated(rng, seeds), rng))),
        (0.06, lambda: dumps(hostile_value(rng), rng)),
        (0.05, lambda: dumps(nested(rng, rng.randint(28, 40)), rng)),
    ]
    weights = [weight for weight, _ in kinds]
    makers = [make for _, make in kinds]
    # The size limits, once each: a message over 1 MiB, and batches at and over 10,000.
    yield b'{"batch":[' + b'{"a":"' + b"x" * (1024 * 1024) + b'"}]}'
    yield b'{"batch":[' + b",".join([b"{}"] * 10_000) + b"]}"
    yield b'{"batch":[' + b",".join([b"{}"] * 10_001) + b"]}"
    for _ in range(MESSAGES - 3):
        yield rng.choices(makers, weights)[0]()


def test_parse_payload_survives_50000_hostile_messages() -> None:
    """No message makes parse_payload raise, give an unknown reason or accept a bad event."""
    rng = random.Random(SEED)
    seeds = real_events()
    problems: list[str] = []
    accepted = rejected = total = 0
    started = time.perf_counter()
    for payload in messages(rng, seeds):
        total += 1
        took, refused = check_message(payload, problems)
        accepted += took
        rejected += refused
    elapsed = time.perf_counter() - started
    assert total == MESSAGES
    assert not problems, f"{len(problems)} problems, e.g.\n" + "\n".join(problems[:15])
    # The mix reaches both sides of the contract, not only the cheap rejections.
    assert accepted > 5_000, accepted
    assert rejected > 30_000, rejected
    print(f"{total} messages, {accepted} events accepted, {rejected} rejected in {elapsed:.1f} s")


def test_the_intake_reasons_are_the_contract_reasons() -> None:
    """The intake's reason set (the metric label's bound) is the one built from the schema."""
    assert REJECTION_REASONS == KNOWN_REASONS


def test_the_inlined_schema_judges_as_the_schema_file() -> None:
    """The validator with references inlined accepts exactly what the file's schema accepts."""
    rng = random.Random(SEED + 1)
    seeds = real_events()
    by_file = Draft202012Validator(SCHEMA)
    docs = [*seeds, *(mutated(rng, seeds) for _ in range(1_500))]
    verdicts = [(by_file.is_valid(doc), VALIDATOR.is_valid(doc)) for doc in docs]
    assert [inlined for _, inlined in verdicts] == [full for full, _ in verdicts]
    assert len(seeds) < sum(full for full, _ in verdicts) < len(docs)  # both verdicts occur


# -- the CSV reader of journey replay, and parse_event_dict -------------------------------

CSV_ROWS = 12_000
CSV_FILES = 6
DICTS = 10_000
#: Cells a spreadsheet export or a hand edit produces: numbers Python reads and JSON does
#: not, digits of other scripts, overlong and odd text, CSV syntax inside a cell.
HOSTILE_CELLS = (
    "", " ", "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1e999", "1_000", "²", "٣",
    "١٢٣", "0x10", "+5", "-5", " 5", "5 ", "5.", ".5", "1e3", "-0", "4294967295",
    "4294967296", "9" * 19, "9" * 5000, "1" + "0" * 400, "2024-06-01T11:00:00Z",
    "2024-06-01 11:00:00+02:00", "1717239600000", "1717239600000.0", "x" * 8192, "x" * 8193,
    "é" * 8193, "a,b", 'say "hi"', "line\nbreak", "\r", "\u0000", "\ufeff", "\u202e",
    "5", "10", "4.5", "-1", "true", "null", "[]", "{}",
)  # fmt: skip
BAD_CSV_BYTES = (b"\xc0\xaf", b"\xff", b"\xed\xa0\x80", b'"', b'"x"y', b"\x00", b",,,,")


class RawEventsWriter:
    """The replay's writer: tables are not kept, the accepted events are."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def write(self, *tables: Any) -> None:
        return None

    def write_raw_events(self, events: list[Event]) -> None:
        self.events += events


def _flat(event: dict[str, Any]) -> dict[str, str]:
    """A real event as CSV cells: dotted columns, numbers as their text."""
    cells: dict[str, str] = {}
    for name in CSV_FIELDS:
        head, _, tail = name.partition(".")
        value = event.get(head, {}).get(tail) if tail else event.get(head)
        if value is not None:
            cells[name] = str(value)
    return cells


def csv_file(
    rng: random.Random, seeds: list[dict[str, Any]], rows: int
) -> tuple[bytes, dict[str, str]]:
    """A CSV export of ``rows`` mutated real events, and the ``--map`` it needs."""
    mapping = {name: f"col {n}" for n, name in enumerate(CSV_FIELDS) if rng.random() < 0.3}
    columns = [mapping.get(name, name) for name in CSV_FIELDS]
    rng.shuffle(columns)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=rng.choice(["\n", "\r\n"]))
    writer.writerow(columns)
    by_column = {mapping.get(name, name): name for name in CSV_FIELDS}
    for _ in range(rows):
        cells = _flat(rng.choice(seeds))
        for _ in range(rng.randint(0, 3)):
            cells[rng.choice(CSV_FIELDS)] = (
                rng.choice(HOSTILE_CELLS) if rng.random() < 0.85 else
                "".join(chr(rng.randint(1, 0x10FFFF)) for _ in range(rng.randint(1, 8)))
            )  # fmt: skip
        row = [cells.get(by_column[column], "") for column in columns]
        roll = rng.random()
        if roll < 0.03:
            row = row[: rng.randrange(len(row))]
        elif roll < 0.06:
            row += ["extra", "cells"]
        writer.writerow(row)
    data = out.getvalue().encode("utf-8", "surrogatepass")
    lines = data.split(b"\n")
    for _ in range(rows // 25):  # byte-level damage: bad UTF-8, stray quotes, NUL, commas
        at = rng.randrange(1, len(lines))
        line = lines[at]
        cut = rng.randrange(len(line) + 1)
        lines[at] = line[:cut] + rng.choice(BAD_CSV_BYTES) + line[cut:]
    lines.insert(rng.randrange(1, len(lines)), b'a,"' + b"x" * 140_000 + b'",b')  # csv's limit
    return b"\n".join(lines), mapping


def test_csv_replay_survives_12000_hostile_rows(tmp_path: Path) -> None:
    """journey replay --format csv: no row raises; reasons known; accepted events valid."""
    rng = random.Random(SEED + 2)
    seeds = real_events()
    problems: list[str] = []
    accepted = rejected = 0
    started = time.perf_counter()
    for n in range(CSV_FILES):
        data, mapping = csv_file(rng, seeds, CSV_ROWS // CSV_FILES)
        path = tmp_path / f"export-{n}.csv"
        path.write_bytes(data)
        writer = RawEventsWriter()
        try:
            report = replay_files(
                [path], "csv", writer, SessionConfig(), StageRules.default(),
                mapping=mapping, raw_events=True, now_ms=NOW,
            )  # fmt: skip
        except Exception as exc:  # any exception is the finding
            problems.append(f"{path.name}: raised {exc!r}")
            continue
        unknown = set(report.reasons) - KNOWN_REASONS
        if unknown:
            problems.append(f"{path.name}: unknown reasons {sorted(unknown)}")
        counts = (report.lines, report.events, report.rejected, len(writer.events))
        if counts[1] + counts[2] != counts[0] or counts[1] != counts[3]:
            problems.append(f"{path.name}: rows, events, rejected, written: {counts}")
        for event in writer.events:
            problem = accepted_event_problem(event)
            if problem:
                problems.append(f"{path.name}: accepted {event.event_id[:40]!r}: {problem}")
        accepted += report.events
        rejected += report.rejected
    elapsed = time.perf_counter() - started
    assert not problems, f"{len(problems)} problems, e.g.\n" + "\n".join(problems[:15])
    assert accepted > 2_000, accepted
    assert rejected > 3_000, rejected
    print(f"{CSV_ROWS} CSV rows: {accepted} accepted, {rejected} rejected in {elapsed:.1f} s")


def _python_value(value: Any, rng: random.Random) -> Any:
    """``value`` with raw JSON text swapped for what a Python caller might pass instead."""
    if isinstance(value, Raw):
        return rng.choice([
            math.nan, math.inf, -math.inf, 10**400, -(10**400), "\ud800", "a\udcff",
            value.text, 1e308 * 10, float("-0"),
        ])  # fmt: skip
    if isinstance(value, dict):
        return {k: _python_value(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_python_value(v, rng) for v in value]
    return value


def test_parse_event_dict_survives_10000_hostile_documents() -> None:
    """A decoded document, NaN and infinity included, is an Event or an InvalidEvent."""
    rng = random.Random(SEED + 3)
    seeds = real_events()
    problems: list[str] = []
    accepted = 0
    for _ in range(DICTS):
        doc = _python_value(mutated(rng, seeds) if rng.random() < 0.9 else rng.choice(seeds), rng)
        try:
            event = parse_event_dict(doc, NOW)
        except InvalidEvent as exc:
            if exc.reason not in KNOWN_REASONS:
                problems.append(f"unknown reason {exc.reason!r}")
            continue
        except Exception as exc:  # any other exception is the finding
            problems.append(f"raised {exc!r} on {str(doc)[:160]}")
            continue
        accepted += 1
        problem = accepted_event_problem(event)
        if problem:
            problems.append(f"accepted {str(doc)[:160]}: {problem}")
    assert not problems, f"{len(problems)} problems, e.g.\n" + "\n".join(problems[:15])
    assert accepted > 1_000, accepted


def test_the_pseudonymiser_survives_hostile_messages() -> None:
    """JOURNEY_PII hash: no hostile message makes the intake raise or leak a raw id.

    Each message's dead-letter payload is the pseudonymised JSON (an empty id stays
    empty: absent) or withheld; every accepted event's ids are pseudonyms; the accepted
    events are those of keep.
    """
    from streams.engine.pii import Pseudonymiser

    pii = Pseudonymiser("hash", b"hostile-input-key-0123456789abcd")
    rng = random.Random(SEED + 1)
    seeds = real_events()
    problems: list[str] = []
    withheld = rewritten = 0
    for n, payload in enumerate(messages(rng, seeds)):
        if n >= 12_000:
            break
        plain = parse_payload(payload, NOW)
        result = pii.parse(payload, NOW)
        if [e.event_id for e in result.events] != [e.event_id for e in plain.events]:
            problems.append(f"accepted other events: {payload[:200]!r}")
        for ev, raw in zip(result.events, plain.events, strict=False):
            if ev.anonymous_id != pii.pseudonym(raw.anonymous_id) or (
                ev.user_id != pii.pseudonym(raw.user_id)
            ):
                problems.append(f"ids not pseudonymised: {payload[:200]!r}")
        for rejection in result.rejections:
            if rejection.withheld:
                withheld += 1
                continue
            rewritten += 1
            doc = orjson.loads(rejection.payload)
            for member in _members_named(doc, ("anonymous_id", "user_id")):
                if not (isinstance(member, str) and re.fullmatch("([0-9a-f]{32})?", member)):
                    problems.append(f"id left in dead letter: {member!r}")
    assert not problems, f"{len(problems)} problems, e.g.\n" + "\n".join(problems[:15])
    assert withheld > 1_000, (withheld, rewritten)
    assert rewritten > 1_000, (withheld, rewritten)


def _members_named(doc: Any, names: tuple[str, ...]) -> Iterator[Any]:
    """The values of every object member called one of ``names``, at any depth."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in names and value is not None:
                    yield value
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
