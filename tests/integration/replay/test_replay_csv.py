"""CSV input with its own column names (``--map``) replays exactly like the same events in JSONL."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from replay_support import otto_events, replay, stored_state, summary_text

T0 = 1_772_355_600_000  # 2026-03-01T09:00:00Z

#: v1 contract field (SPEC section 3, dotted when nested) -> the export's column name.
#: properties.currency is left out on purpose: an unmapped field is read from a column of
#: its own name.
COLUMNS = {
    "event_id": "Event ID",
    "event_type": "Action",
    "timestamp": "When",
    "anonymous_id": "cookie",
    "user_id": "customer_no",
    "page.url": "url",
    "page.path": "path",
    "page.title": "page_title",
    "page.referrer": "referrer_url",
    "campaign.source": "utm_source",
    "campaign.medium": "utm_medium",
    "campaign.name": "utm_campaign",
    "campaign.term": "utm_term",
    "campaign.content": "utm_content",
    "properties.product_id": "sku",
    "properties.category": "category",
    "properties.price": "unit_price",
    "properties.quantity": "qty",
    "properties.order_id": "order_number",
    "properties.revenue": "order_total",
    "properties.cart_id": "basket",
    "properties.score": "rating",
    "properties.scale": "rating_scale",
    "context.user_agent": "ua",
    "context.locale": "lang",
    "context.device_type": "device",
}
UNMAPPED = ("properties.currency",)


def _hand_events() -> list[dict[str, Any]]:
    """A few visitors using most contract fields, both timestamp forms and a duplicate."""
    phone = {"user_agent": "Mozilla/5.0 (iPhone)", "locale": "de-DE", "device_type": "mobile"}
    landing = "https://shop.example/sale?utm_source=google&utm_medium=cpc&utm_campaign=spring"
    shoe = {"product_id": "SKU-1", "category": "shoes", "price": 59.9, "currency": "EUR"}
    viewed = {
        "event_id": "a2", "event_type": "product_view", "timestamp": T0 + 40_000,
        "anonymous_id": "web-a", "page": {"path": "/p/sku-1"}, "properties": shoe,
        "context": phone,
    }  # fmt: skip
    email = {"source": "newsletter", "medium": "email", "name": "march", "content": "hero"}
    return [
        {
            "event_id": "a1", "event_type": "page_view", "timestamp": T0,
            "anonymous_id": "web-a", "context": phone,
            "page": {"url": landing, "path": "/sale", "title": "Sale",
                     "referrer": "https://www.google.com/"},
        },
        viewed,
        dict(viewed),  # the tracker sent it twice: one duplicate to drop
        {
            "event_id": "a3", "event_type": "add_to_cart", "timestamp": T0 + 90_000,
            "anonymous_id": "web-a", "context": phone,
            "properties": {**shoe, "quantity": 2, "cart_id": "c-1"},
        },
        {"event_id": "a4", "event_type": "begin_checkout", "timestamp": T0 + 120_000,
         "anonymous_id": "web-a", "user_id": "cust-7", "context": phone},
        {
            "event_id": "a5", "event_type": "purchase", "timestamp": T0 + 180_000,
            "anonymous_id": "web-a", "user_id": "cust-7", "context": phone,
            "properties": {"order_id": "A-1001", "revenue": 119.8, "currency": "EUR"},
        },
        {"event_id": "b1", "event_type": "page_view", "timestamp": "2026-03-01T11:00:00+01:00",
         "anonymous_id": "web-b", "campaign": email, "page": {"path": "/news/march"}},
        {"event_id": "b2", "event_type": "survey_response", "timestamp": "2026-03-01T10:00:20Z",
         "anonymous_id": "web-b", "properties": {"score": 9, "scale": 10}},
        {"event_id": "b3", "event_type": "survey_response", "timestamp": "2026-03-01T10:00:30Z",
         "anonymous_id": "web-b", "properties": {"score": 4, "scale": 5}},
        {"event_id": "b4", "event_type": "review_submitted", "timestamp": "2026-03-01T10:45:30Z",
         "anonymous_id": "web-b", "properties": {"product_id": "SKU-2", "score": 5, "scale": 5}},
        {"event_id": "c1", "event_type": "page_view", "timestamp": T0 + 3_600_000,
         "user_id": "cust-9", "page": {"url": "https://shop.example/", "title": "Home",
                                       "referrer": "https://news.example.org/article"}},
    ]  # fmt: skip


def _flatten(event: dict[str, Any]) -> dict[str, str]:
    """One event as CSV cells keyed by contract field; every field must be a v1 field."""
    cells: dict[str, str] = {}
    for key, value in event.items():
        members = value.items() if isinstance(value, dict) else [(None, value)]
        for member, item in members:
            name = key if member is None else f"{key}.{member}"
            assert name in COLUMNS or name in UNMAPPED, f"{name} is not a v1 contract field"
            cells[name] = str(item)
    return cells


def test_csv_with_mapped_columns_equals_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A CSV export with its own column names read with --map equals the JSONL, summary and rows."""
    events = _hand_events() + otto_events()
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    header = [*COLUMNS.values(), *UNMAPPED]
    export = tmp_path / "export.csv"
    with export.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for event in events:
            writer.writerow({COLUMNS.get(k, k): v for k, v in _flatten(event).items()})
    from_jsonl, from_csv = str(tmp_path / "jsonl"), str(tmp_path / "csv")
    jsonl_report = replay(capsys, from_jsonl, str(jsonl))
    maps = [arg for field, column in COLUMNS.items() for arg in ("--map", f"{field}={column}")]
    csv_report = replay(capsys, from_csv, str(export), "--format", "csv", *maps)
    accepted = f"{len(events)} lines, {len(events)} events accepted, 0 rejected, 1 duplicates"
    assert accepted in jsonl_report
    assert accepted in csv_report
    csv_summary = summary_text(capsys, from_csv)
    assert csv_summary == summary_text(capsys, from_jsonl)
    assert stored_state(from_csv) == stored_state(from_jsonl)
    # The hand-made visitors are really in there: A-1001 (119.80) is the only paid order.
    assert json.loads(csv_summary)["revenue"] == 119.8
