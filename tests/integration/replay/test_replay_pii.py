"""``journey replay`` under JOURNEY_PII on real data: no raw id stored, every figure as keep."""

from __future__ import annotations

import hashlib
import hmac
import json
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from replay_support import otto_events, replay, summary_text

from streams.clickhouse.backend import open_backend

pytestmark = pytest.mark.integration

KEY = "replay-pii-key-0123456789abcdef"
ID_COLUMNS = ("visitor_key", "anonymous_id", "user_id", "customer_key", "link_user_id")


def pseudonym(value: str) -> str:
    """The documented pseudonym, computed here independently of streams/."""
    if not value:
        return ""
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]


def otto_with_people() -> list[dict[str, Any]]:
    """The OTTO events, with what a store's tracker adds: URLs with query strings, and a
    user_id on every event of a visitor from its first add to cart on (a login). Event ids
    are renumbered: the fixture's name the visitor (``otto-<n>-<i>``), and event ids are
    not personal data here, so they would hide what the search looks for."""
    events = otto_events()
    for number, event in enumerate(events):
        event["event_id"] = f"event-{number:05d}"
    logged_in: set[str] = set()
    for event in sorted(events, key=lambda e: (e["timestamp"], e["event_id"])):
        visitor = event["anonymous_id"]
        product = event["properties"]["product_id"]
        event["page"] = {
            "url": f"https://shop.example/p/{product}?visitor={visitor}&utm_source=otto",
            "referrer": f"https://search.example/?q={visitor}-private",
        }
        if event["event_type"] == "add_to_cart":
            logged_in.add(visitor)
        if visitor in logged_in:
            event["user_id"] = f"customer-of-{visitor}"
    return events


def same(value: Any) -> Any:
    """The value itself."""
    return value


def rows(target: str, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and every row of ``table`` at ``target``."""
    with closing(open_backend(target)) as backend:
        columns = [row[0] for row in backend.query(f"DESCRIBE TABLE {table}")]
        return columns, backend.query(f"SELECT * FROM {table}")


def tables(target: str) -> list[str]:
    """Every table and view of ``target``."""
    with closing(open_backend(target)) as backend:
        return [row[0] for row in backend.query("SHOW TABLES")]


def sessions_without_ids(target: str, rename: Any, strip: Any) -> list[tuple[Any, ...]]:
    """Live session rows, ids through ``rename``, the referrer through ``strip``, without
    session_id and version."""
    columns, found = rows(target, "sessions")
    out = []
    for row in found:
        named = dict(zip(columns, row, strict=True))
        if named["deleted"]:
            continue
        out.append(
            tuple(
                rename(value)
                if name in ID_COLUMNS
                else strip(value)
                if name == "referrer"
                else value
                for name, value in named.items()
                if name not in ("session_id", "version")
            )
        )
    return sorted(out)


def test_hash_replay_of_real_data_stores_only_pseudonyms(
    tmp_path: Path, server_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """OTTO under hash, server and chdb: no raw id or query stored; sessions and figures as keep."""
    events = otto_with_people()
    path = tmp_path / "otto.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    raw_ids = {e["anonymous_id"] for e in events} | {e["user_id"] for e in events if "user_id" in e}
    queries = {e["page"][name].split("?", 1)[1] for e in events for name in ("url", "referrer")}
    assert len({e["anonymous_id"] for e in events}) == 20  # the fixture's 20 OTTO sessions
    assert sum(i.startswith("customer-of-") for i in raw_ids) >= 5

    keep = str(tmp_path / "keep")
    replay(capsys, keep, str(path), "--raw-events")
    monkeypatch.setenv("JOURNEY_PII", "hash")
    monkeypatch.setenv("JOURNEY_PII_KEY", KEY)
    hashed = str(tmp_path / "hash")
    replay(capsys, hashed, str(path), "--raw-events")
    replay(capsys, server_url, str(path), "--raw-events")

    for target in (hashed, server_url):
        assert summary_text(capsys, target) == summary_text(capsys, keep)
        # Each keep session, its ids hashed here, is a session of the hash replay.
        assert sessions_without_ids(target, same, same) == sessions_without_ids(
            keep, pseudonym, lambda url: url.split("?", 1)[0]
        )
        stored = b""
        for table in tables(target):
            _, found = rows(target, table)
            stored += "\n".join("\t".join(map(str, row)) for row in found).encode() + b"\n"
        assert b"shop.example" in stored or b"/p/" in stored  # the search reads real text
        leaked = sorted(i for i in raw_ids if i.encode() in stored)
        assert not leaked, f"raw ids stored at {target}: {leaked[:5]}"
        assert not [q for q in queries if q.encode() in stored], "query strings stored"
        columns, raw = rows(target, "raw_events")
        visitors = {dict(zip(columns, row, strict=True))["visitor_key"] for row in raw}
        assert visitors == {pseudonym(e["anonymous_id"]) for e in events}
