"""JOURNEY_PII: no raw id leaves the worker or replay, and every figure equals keep's."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support import database_url, drop_database, poll, run_journey, topic_reader
from workerkit import (
    Names,
    WorkerProcess,
    assert_same_as_replay,
    generate_file,
    kafka_admin,
    produce,
    progress,
    query,
    summary,
    total,
    wait_complete,
)

from streams.engine.state import Corrupt
from streams.worker.partition import decode_visitor

EVENTS = 3_000
KEY = "integration-pii-key-0123456789abcdef"
#: A visitor and a customer seen only in the late event, with a query string of their own.
LATE_ANONYMOUS_ID = "late-visitor-anon-7f3a"
LATE_USER_ID = "late-customer-9c21"
LATE_QUERY = "?coupon=LATE-SECRET-42&email=late%40example.org"
#: An id member in a line that is not JSON (a truncated body still holds whole ids).
_ID_IN_TEXT = re.compile(rb'"(?:anonymous_id|user_id)"\s*:\s*"([^"\\]+)"')


def pseudonym(value: str) -> str:
    """The documented pseudonym, computed here independently of streams/."""
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]


def _elements(line: bytes) -> Iterator[dict[str, Any]]:
    """The event objects of an input line (a batch's elements too); nothing if not JSON."""
    try:
        doc = json.loads(line)
    except ValueError:
        return
    docs = doc.get("batch") if isinstance(doc, dict) and "batch" in doc else [doc]
    for element in docs if isinstance(docs, list) else []:
        if isinstance(element, dict):
            yield element


def personal_data(lines: list[bytes]) -> dict[str, set[str]]:
    """Every raw id, query string (with its ``?``), user agent and title of the input.

    Found in the lines' text as well as in their JSON: a malformed line that is not JSON
    still holds the ids the generator wrote into it. Titles are kept JSON-quoted (a short
    title such as "Sale" could be part of other text; the topics carry events as JSON).
    """
    found: dict[str, set[str]] = {"ids": set(), "queries": set(), "agents": set(), "titles": set()}
    for line in lines:
        found["ids"].update(m.decode() for m in _ID_IN_TEXT.findall(line))
        for element in _elements(line):
            for name in ("anonymous_id", "user_id"):
                if isinstance(element.get(name), str) and element[name]:
                    found["ids"].add(element[name])
            page = element.get("page") if isinstance(element.get("page"), dict) else {}
            for name in ("url", "referrer"):
                value = page.get(name)
                if isinstance(value, str) and "?" in value:
                    found["queries"].add(value[value.index("?") :])
            if isinstance(page.get("title"), str) and page["title"]:
                found["titles"].add(json.dumps(page["title"]))
            context = element.get("context") if isinstance(element.get("context"), dict) else {}
            if isinstance(context.get("user_agent"), str) and context["user_agent"]:
                found["agents"].add(context["user_agent"])
    return found


def read_whole_topic(topic: str, timeout_s: float = 20.0) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record of ``topic``, read up to its end offsets (bounded)."""
    consumer = topic_reader(topic)
    records: list[tuple[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        ends = consumer.end_offsets(list(consumer.assignment()))
        consumer.seek_to_beginning()
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend((r.key or b"", r.value or b"") for r in batch)
            if all(consumer.position(tp) >= end for tp, end in ends.items()):
                break
        else:
            pytest.fail(f"{topic} not read to its end {ends} within {timeout_s} s")
    finally:
        consumer.close()
    return records


def changelog_text(key: bytes, value: bytes) -> bytes:
    """A changelog record as searchable text: a visitor's state decompressed and as JSON."""
    if key.startswith(b"\x00") or not value:  # a partition's own record, or a deletion
        return key + b"\t" + value
    state = decode_visitor(key.decode("utf-8", "replace"), value)
    assert not isinstance(state, Corrupt), (key, state)
    return key + b"\t" + msgspec.json.encode(state)


def table_bytes(url: str) -> dict[str, bytes]:
    """Every table (and view) of ``url`` as TSV-like text: one line per row, cells by tabs."""
    out = {}
    for (table,) in query(url, "SHOW TABLES"):
        rows = query(url, f"SELECT * FROM {table}")
        out[table] = "\n".join("\t".join(str(cell) for cell in row) for row in rows).encode()
    return out


def assert_absent(haystacks: dict[str, bytes], needles: set[str], what: str) -> None:
    """None of ``needles`` occurs in any haystack; the failure names where."""
    assert needles, f"the input holds no {what}: the check would be empty"
    for where, data in haystacks.items():
        leaked = sorted(n for n in needles if n.encode() in data)
        assert not leaked, f"raw {what} in {where}: {leaked[:5]} ({len(leaked)} in all)"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["hash", "drop"])
@pytest.mark.parametrize("names", [1], indirect=True)
def test_no_raw_personal_data_leaves_and_figures_equal_keep(
    tmp_path: Path, names: Names, workers: Callable[..., WorkerProcess], mode: str
) -> None:
    """hash/drop: no raw id, query (drop: UA, title) in tables, topics, DLQ, changelog, logs."""
    pii = {"JOURNEY_PII": mode, "JOURNEY_PII_KEY": KEY}
    path = tmp_path / "events.jsonl"
    lines = generate_file(path, EVENTS, 61, "--malformed-ratio", "0.03")
    known = next(e for line in lines for e in _elements(line) if e.get("anonymous_id"))
    late = json.dumps({
        "event_id": "late-event-1", "event_type": "page_view",
        "timestamp": "2026-11-19T10:00:00.000Z",
        "anonymous_id": LATE_ANONYMOUS_ID, "user_id": LATE_USER_ID,
        "page": {"url": f"https://shop.example/p/late{LATE_QUERY}", "title": "Late page title",
                 "referrer": f"https://news.example/story{LATE_QUERY}"},
        "context": {"user_agent": "LateAgent/1.0 (personal build 77)"},
    }).encode()  # fmt: skip
    late_known = json.dumps({
        "event_id": "late-event-2", "event_type": "page_view",
        "timestamp": "2026-11-19T11:00:00.000Z", "anonymous_id": known["anonymous_id"],
    }).encode()  # fmt: skip
    found = personal_data([*lines, late, late_known])
    assert LATE_ANONYMOUS_ID in found["ids"]
    assert LATE_QUERY in found["queries"]

    # The figures of keep, and the reference of this mode, both by replay.
    keep_url = database_url(f"{names.reference_database}_keep")
    try:
        run_journey("replay", str(path), "--clickhouse", keep_url)
        replay_out = run_journey(
            "replay", str(path), "--raw-events", "--clickhouse", names.reference_url, **pii
        )
        _, expected_events, _ = progress(names.reference_url)
        assert summary(names.reference_url) == summary(keep_url), "figures differ from keep"
    finally:
        drop_database(keep_url)
    rejected = int(replay_out.split(" rejected")[0].rsplit(" ", 1)[1])
    assert rejected >= EVENTS * 0.02, replay_out

    produce(names.topic, lines)
    worker = workers(names, mode, **{k.removeprefix("JOURNEY_"): v for k, v in pii.items()})
    worker.start()
    worker.wait_ready()
    wait_complete([worker], names.url, expected_events, timeout_s=120)
    # Sent once the rest is in: an intake batch holding them with the rest would judge
    # them against the watermark before that batch, and they would not be late.
    produce(names.topic, [late, late_known])
    poll(
        lambda: total(worker.metrics(), "journey_events_late_total") == 2,
        timeout_s=30,
        what="the two late events counted",
        describe=lambda: worker.log_tail(10),
    )
    worker.assert_alive(f"with JOURNEY_PII={mode}")
    assert_same_as_replay(names)  # the worker's rows and figures equal replay's (and keep's)

    admin = kafka_admin()
    try:
        topics = sorted(t for t in admin.list_topics() if t.startswith(f"wt-{names.tag}-"))
    finally:
        admin.close()
    outputs = [t for t in topics if t != names.topic]
    assert {names.dlq_topic, names.late_topic, names.sessions_topic, names.transitions_topic,
            f"{names.app_id}-events-by-visitor", f"{names.app_id}-visitors-changelog"} <= set(
        outputs
    ), outputs  # fmt: skip
    haystacks: dict[str, bytes] = {}
    read: dict[str, list[tuple[bytes, bytes]]] = {}
    for topic in outputs:
        read[topic] = read_whole_topic(topic)
        decode = changelog_text if topic.endswith("-changelog") else (lambda k, v: k + b"\t" + v)
        haystacks[f"topic {topic}"] = b"\n".join(decode(k, v) for k, v in read[topic])
    for label, url in (("worker", names.url), ("replay", names.reference_url)):
        for table, data in table_bytes(url).items():
            haystacks[f"{label} table {table}"] = data
    haystacks["worker log"] = worker.log_path.read_bytes()
    haystacks["replay output"] = replay_out.encode()

    assert_absent(haystacks, {KEY}, "key")
    assert_absent(haystacks, found["ids"], "ids")
    assert_absent(haystacks, found["queries"], "query strings")
    if mode == "drop":
        assert_absent(haystacks, found["agents"], "user agents")
        assert_absent(haystacks, found["titles"], "page titles")
    else:
        # What hash keeps is found by the same search: it is not blind to these outputs.
        forwarded = haystacks[f"topic {names.app_id}-events-by-visitor"]
        assert any(agent.encode() in forwarded for agent in found["agents"])
        assert any(title.encode() in forwarded for title in found["titles"])

    # The pseudonyms are there instead: the changelog's visitors, the late events' ids.
    pseudonyms = {pseudonym(i) for i in found["ids"]}
    changelog = read[f"{names.app_id}-visitors-changelog"]
    visitors = {k.decode() for k, _ in changelog if not k.startswith(b"\x00")}
    assert visitors
    assert visitors <= pseudonyms
    late_events = {ev["event_id"]: ev for ev in (json.loads(v) for _, v in read[names.late_topic])}
    assert sorted(late_events) == ["late-event-1", "late-event-2"]
    assert late_events["late-event-1"]["anonymous_id"] == pseudonym(LATE_ANONYMOUS_ID)
    assert late_events["late-event-1"]["user_id"] == pseudonym(LATE_USER_ID)
    assert late_events["late-event-1"]["page_url"] == "https://shop.example/p/late"
    assert late_events["late-event-2"]["visitor_key"] == pseudonym(known["anonymous_id"])
    dead = [json.loads(v) for _, v in read[names.dlq_topic]]
    assert len(dead) == rejected
    assert all(record["payload_bytes"] > 0 for record in dead)
    if mode == "drop":
        assert all(record["payload"] is None for record in dead)
    else:
        kept = [json.loads(r["payload"]) for r in dead if r["payload"] is not None]
        assert kept, "no dead letter kept its (pseudonymised) payload"
        assert any(r["payload"] is None for r in dead), "no invalid JSON was withheld"
        ids = [
            d.get(n) for d in kept if isinstance(d, dict)
            for n in ("anonymous_id", "user_id") if d.get(n)
        ]  # fmt: skip
        assert ids
        assert set(ids) <= pseudonyms
