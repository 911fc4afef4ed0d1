"""JOURNEY_PII: pseudonyms, URL stripping, dropped fields and dead-letter payloads."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import Counter

import orjson
import pytest

from streams.engine.intake import parse_payload
from streams.engine.pii import Pseudonymiser, pseudonymiser, strip_url
from streams.engine.sessionizer import SessionConfig, sessionize_all
from streams.engine.stages import load_stage_rules
from streams.worker.codec import rejection_record

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW_MS = 1_800_000_000_000
UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"


def reference_pseudonym(key: bytes, value: str) -> str:
    """The documented pseudonym, computed independently: HMAC-SHA256 hex, first 32 digits."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def event_json(**overrides: object) -> bytes:
    """A full v1 event with ids, URLs with query strings, a title and a user agent."""
    doc: dict[str, object] = {
        "event_id": "e-1",
        "event_type": "page_view",
        "timestamp": "2026-11-20T10:00:00.000Z",
        "anonymous_id": "anon-alice-42",
        "user_id": "alice@example.com",
        "page": {
            "url": "https://shop.example/p/7?utm_source=newsletter&utm_medium=email&email=a%40b#top",
            "title": "Alice's basket",
            "referrer": "https://www.google.com/search?q=alice+example#r",
        },
        "context": {"user_agent": UA},
    }
    doc.update(overrides)
    return json.dumps(doc).encode()


def test_pseudonym_is_the_documented_keyed_hash() -> None:
    """The pseudonym is HMAC-SHA256(key, id) in hex, 32 digits, the same on every call."""
    pii = Pseudonymiser("hash", KEY)
    first = pii.pseudonym("alice@example.com")
    assert first == reference_pseudonym(KEY, "alice@example.com")
    assert pii.pseudonym("alice@example.com") == first
    assert Pseudonymiser("hash", KEY).pseudonym("alice@example.com") == first  # another process
    assert len(first) == 32
    assert "alice" not in first


def test_pseudonym_depends_on_the_key() -> None:
    """Another key gives another pseudonym: without the key nobody can recompute it."""
    assert Pseudonymiser("hash", KEY).pseudonym("u-1") != Pseudonymiser(
        "hash", OTHER_KEY
    ).pseudonym("u-1")


def test_absent_ids_stay_absent() -> None:
    """An empty id is not hashed into a value: an event without user_id still has none."""
    assert Pseudonymiser("hash", KEY).pseudonym("") == ""


def test_the_cache_is_bounded_and_does_not_change_results() -> None:
    """Past the cache's size, pseudonyms computed again equal the first ones."""
    pii = Pseudonymiser("hash", KEY)
    ids = [f"visitor-{n}" for n in range(70_000)]
    first = [pii.pseudonym(i) for i in ids]
    assert len(pii._ids) <= 65_536
    assert [pii.pseudonym(i) for i in ids[:10]] == first[:10]


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        ("https://shop.example/p/7?a=1&b=2", "https://shop.example/p/7"),
        ("https://shop.example/p/7#section", "https://shop.example/p/7"),
        ("https://shop.example/p/7#frag?not=query", "https://shop.example/p/7"),
        ("https://shop.example/p/7?a=1#frag", "https://shop.example/p/7"),
        ("https://shop.example/p/7", "https://shop.example/p/7"),
        ("/cart?coupon=ALICE", "/cart"),
        ("?only=query", ""),
        ("", ""),
    ],
)
def test_strip_url_cuts_the_query_and_fragment(url: str, stripped: str) -> None:
    """Everything from the first ``?`` or ``#`` goes; scheme, host and path stay."""
    assert strip_url(url) == stripped


def test_hash_rewrites_ids_and_urls_and_keeps_what_the_engine_derived() -> None:
    """hash: ids pseudonymised, queries cut; campaign, referrer host, title and UA kept."""
    (raw,) = parse_payload(event_json(), NOW_MS).events
    (ev,) = Pseudonymiser("hash", KEY).parse(event_json(), NOW_MS).events
    assert ev.anonymous_id == reference_pseudonym(KEY, "anon-alice-42")
    assert ev.user_id == reference_pseudonym(KEY, "alice@example.com")
    assert ev.visitor_key == ev.anonymous_id
    assert ev.page_url == "https://shop.example/p/7"
    assert ev.page_path == "/p/7"
    assert ev.referrer == "https://www.google.com/search"
    # Read from the URL's query before it was cut:
    assert (ev.campaign_source, ev.campaign_medium) == ("newsletter", "email")
    assert ev.page_title == "Alice's basket"
    assert ev.user_agent == UA
    unchanged = {"anonymous_id", "user_id", "visitor_key", "page_url", "referrer"}
    for name in raw.__struct_fields__:
        if name not in unchanged:
            assert getattr(ev, name) == getattr(raw, name), name


def test_user_id_alone_becomes_the_visitor_key_pseudonym() -> None:
    """An event with only a user_id is keyed by that id's pseudonym."""
    payload = event_json(anonymous_id=None)
    doc = json.loads(payload)
    del doc["anonymous_id"]
    (ev,) = Pseudonymiser("hash", KEY).parse(json.dumps(doc).encode(), NOW_MS).events
    assert ev.anonymous_id == ""
    assert ev.visitor_key == ev.user_id == reference_pseudonym(KEY, "alice@example.com")


def test_drop_also_blanks_user_agent_and_title_but_keeps_the_device() -> None:
    """drop: no user agent, no title; the device class read from the UA is kept."""
    (ev,) = Pseudonymiser("drop", KEY).parse(event_json(), NOW_MS).events
    assert ev.user_agent == ""
    assert ev.page_title == ""
    assert ev.device_type == "mobile"
    assert ev.device == "mobile"
    assert ev.user_id == reference_pseudonym(KEY, "alice@example.com")
    assert ev.page_url == "https://shop.example/p/7"


def test_hash_dead_letter_payload_is_pseudonymised() -> None:
    """A rejected JSON event goes to the DLQ with its ids hashed and its URLs cut."""
    bad = event_json(properties={"revenue": -5})
    result = Pseudonymiser("hash", KEY).parse(bad, NOW_MS)
    (rejection,) = result.rejections
    assert rejection.reason == "negative_revenue"
    assert rejection.size == len(bad)
    assert not rejection.withheld
    doc = json.loads(rejection.payload)
    assert doc["anonymous_id"] == reference_pseudonym(KEY, "anon-alice-42")
    assert doc["user_id"] == reference_pseudonym(KEY, "alice@example.com")
    assert doc["page"]["url"] == "https://shop.example/p/7"
    assert doc["page"]["referrer"] == "https://www.google.com/search"
    assert doc["properties"] == {"revenue": -5}
    assert b"alice" not in rejection.payload.lower().replace(b"alice's basket", b"")


def test_hash_dead_letter_hashes_ids_of_any_type_in_batches() -> None:
    """A batch element's ids are hashed, numbers and objects included (their JSON text)."""
    bad = orjson.dumps({"batch": [{"event_id": "x", "user_id": 12345, "anonymous_id": {"a": 1}}]})
    (rejection,) = Pseudonymiser("hash", KEY).parse(bad, NOW_MS).rejections
    assert rejection.index == 0
    doc = json.loads(rejection.payload)
    assert doc["user_id"] == reference_pseudonym(KEY, "12345")
    assert doc["anonymous_id"] == reference_pseudonym(KEY, '{"a":1}')


def test_hash_withholds_a_payload_that_is_not_json() -> None:
    """Bytes that are not JSON cannot be searched for ids: withheld, size kept."""
    bad = b'{"anonymous_id": "anon-alice-42", oops'
    (rejection,) = Pseudonymiser("hash", KEY).parse(bad, NOW_MS).rejections
    assert rejection.reason == "invalid_json"
    assert rejection.withheld
    assert rejection.size == len(bad)
    record = json.loads(rejection_record(rejection, _Message(), NOW_MS))
    assert record["payload"] is None
    assert record["payload_encoding"] is None
    assert record["payload_bytes"] == len(bad)
    assert record["reason"] == "invalid_json"
    assert record["source"]["offset"] == 7


def test_hash_withholds_a_payload_nested_too_deep_to_walk() -> None:
    """A hostile nesting is withheld rather than walked."""
    bad = b"[" * 900 + b"]" * 900
    (rejection,) = Pseudonymiser("hash", KEY).parse(bad, NOW_MS).rejections
    assert rejection.withheld


def test_drop_withholds_every_dead_letter_payload() -> None:
    """drop: the DLQ keeps reason, offset and size, never the payload."""
    bad = event_json(properties={"revenue": -5})
    (rejection,) = Pseudonymiser("drop", KEY).parse(bad, NOW_MS).rejections
    record = json.loads(rejection_record(rejection, _Message(), NOW_MS))
    assert record["payload"] is None
    assert record["payload_bytes"] == len(bad)
    assert b"alice" not in rejection_record(rejection, _Message(), NOW_MS).lower()


def test_keep_has_no_pseudonymiser() -> None:
    """keep builds nothing: the intake calls parse_payload itself."""
    assert pseudonymiser("keep", b"") is None
    with pytest.raises(ValueError, match="hash or drop"):
        Pseudonymiser("keep", KEY)


def test_figures_do_not_depend_on_the_ids_values() -> None:
    """Sessionized with pseudonyms, every session and order has the same measures."""
    lines = []
    for n in range(200):
        visitor = f"anon-{n % 13}"
        doc = {
            "event_id": f"e-{n}",
            "event_type": ["page_view", "add_to_cart", "purchase", "product_view"][n % 4],
            "timestamp": 1_790_000_000_000 + n * 97_000 * (1 + n % 5),
            "anonymous_id": visitor,
            "page": {"url": f"https://shop.example/p/{n % 7}?ref={visitor}"},
            "properties": {"order_id": f"o-{n}", "revenue": 10.0} if n % 4 == 2 else {},
        }
        if n % 3 == 0:
            doc["user_id"] = f"customer-{n % 5}"
        lines.append(orjson.dumps(doc))
    raw = [ev for line in lines for ev in parse_payload(line, NOW_MS).events]
    pii = Pseudonymiser("hash", KEY)
    hashed = pii.events(raw)
    config, rules = SessionConfig(), load_stage_rules(None)
    plain, pseudo = sessionize_all(raw, config, rules), sessionize_all(hashed, config, rules)

    def measures(rows: list) -> Counter:
        return Counter(
            (r.start_ms, r.end_ms, r.events, r.page_views, r.furthest_stage, r.converted,
             r.channel, r.landing_page)
            for r in rows
        )  # fmt: skip

    assert measures(pseudo.sessions) == measures(plain.sessions)
    assert len(pseudo.orders) == len(plain.orders)
    assert {r.visitor_key for r in pseudo.sessions} == {
        pii.pseudonym(r.visitor_key) for r in plain.sessions
    }
    assert {r.customer_key for r in pseudo.sessions} == {
        pii.pseudonym(r.customer_key) for r in plain.sessions
    }
    assert not any("anon-" in r.visitor_key or "customer-" in r.user_id for r in pseudo.sessions)


class _Message:
    """The source of a dead letter: topic, partition and offset."""

    topic = "clickstream"
    partition = 0
    offset = 7


def test_the_fingerprint_names_the_key_without_revealing_it() -> None:
    """Same key, same fingerprint (hash or drop); another key, another; no key bytes in it."""
    fingerprint = Pseudonymiser("hash", KEY).fingerprint
    assert fingerprint == Pseudonymiser("drop", KEY).fingerprint
    assert fingerprint != Pseudonymiser("hash", OTHER_KEY).fingerprint
    assert fingerprint == hmac.new(KEY, b"journey-streams pseudonym key", "sha256").hexdigest()[:16]
