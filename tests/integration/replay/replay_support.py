"""Helpers of the replay tests: OTTO to v1 events, running ``journey``, reading tables back.

Nothing here computes a figure the tests expect; that is done in the tests themselves or
by ``reference_sql`` (SQL over ``raw_events``), so the engine is never its own oracle.
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from streams.cli import main
from streams.clickhouse.backend import is_server_url, open_backend

OTTO_FILE = Path(__file__).resolve().parent / "data" / "otto" / "train_fixture.jsonl"

#: OTTO interaction types as v1 event types (README of the fixture).
OTTO_TYPES = {"clicks": "product_view", "carts": "add_to_cart", "orders": "purchase"}

#: ``journey generate`` options of the generated test file (after ``generate``).
GENERATED_ARGS = (
    "--events", "20000", "--seed", "11", "--start", "2026-11-20T10:00:00Z",
    "--malformed-ratio", "0.02",
)  # fmt: skip

GAP_MS = 30 * 60 * 1000
MAX_SESSION_MS = 24 * 60 * 60 * 1000


def otto_events(path: Path = OTTO_FILE) -> list[dict[str, Any]]:
    """Every OTTO interaction as a v1 event; the OTTO session is the visitor ``otto-<n>``."""
    events: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            n = record["session"]
            for index, item in enumerate(record["events"]):
                events.append(
                    {
                        "event_id": f"otto-{n}-{index}",
                        "event_type": OTTO_TYPES[item["type"]],
                        "timestamp": item["ts"],
                        "anonymous_id": f"otto-{n}",
                        "properties": {"product_id": str(item["aid"])},
                    }
                )
    return events


def plain_sessions(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """SPEC section 4 in a few lines: per visitor, in time order, cut at gaps > 30 min / > 24 h.

    Events need an integer ``timestamp`` and an ``anonymous_id``.
    """
    by_visitor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        by_visitor[event["anonymous_id"]].append(event)
    sessions: list[list[dict[str, Any]]] = []
    for visitor_events in by_visitor.values():
        visitor_events.sort(key=lambda e: e["timestamp"])
        current: list[dict[str, Any]] = []
        for event in visitor_events:
            ts = event["timestamp"]
            if current and (
                ts - current[-1]["timestamp"] > GAP_MS
                or ts - current[0]["timestamp"] > MAX_SESSION_MS
            ):
                sessions.append(current)
                current = []
            current.append(event)
        sessions.append(current)
    return sessions


def journey(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run ``journey ARGV`` in this process; its exit status and what it printed to stdout."""
    capsys.readouterr()  # drop anything printed before
    status = main(list(argv))
    return status, capsys.readouterr().out


def target_args(target: str) -> list[str]:
    """``--clickhouse URL`` for a server URL, else ``--embedded DIR``."""
    return ["--clickhouse" if is_server_url(target) else "--embedded", target]


def replay(capsys: pytest.CaptureFixture[str], target: str, *args: str) -> str:
    """``journey replay ARGS`` into ``target``, which must succeed; the printed report."""
    status, out = journey(capsys, "replay", *args, *target_args(target))
    assert status == 0, f"journey replay {' '.join(args)} exited {status}:\n{out}"
    return out


def summary_text(capsys: pytest.CaptureFixture[str], target: str) -> str:
    """The line ``journey summary --json`` prints for ``target``."""
    status, out = journey(capsys, "summary", *target_args(target), "--json")
    assert status == 0, f"journey summary exited {status}:\n{out}"
    return out.strip()


def table_rows(target: str, table: str, key: str) -> list[tuple[Any, ...]]:
    """Live rows of ``table`` (FINAL, deleted = 0), every column but ``version``, by ``key``."""
    with closing(open_backend(target)) as backend:
        columns = [row[0] for row in backend.query(f"DESCRIBE TABLE {table}")]
        wanted = [c for c in columns if c != "version"]
        return backend.query(
            f"SELECT {', '.join(wanted)} FROM {table} FINAL WHERE deleted = 0 ORDER BY {key}"
        )


def stored_state(target: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Session rows and order rows of ``target`` as :func:`table_rows` reads them."""
    return table_rows(target, "sessions", "session_id"), table_rows(target, "orders", "order_key")
