"""An independent reference for the intake: the contract checked by walking a decoded dict.

This is the validator the worker used before the typed decoder (field by field over the
``orjson`` dict, one helper per rule), kept here as the oracle the decoder is compared
with: a different computation of the same contract. Timestamps go through the regex
path of ``parse_timestamp`` only, not its slicing fast path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

from streams.engine import intake
from streams.engine.events import Event
from streams.engine.intake import MAX_FUTURE_MS, MAX_STRING_CHARS, InvalidEvent, _utm


def reference_timestamp(value: object) -> int:
    """parse_timestamp with its slicing fast path switched off; raises ``InvalidEvent``."""
    with mock.patch.object(intake, "_utc_timestamp", return_value=-1):
        return intake.parse_timestamp(value)


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


def reference_build(obj: Mapping[str, Any], now_ms: int) -> Event:
    """Validate one event object and flatten it, field by field; raises ``InvalidEvent``."""
    event_id = _id_text(obj, "event_id")
    event_type = _id_text(obj, "event_type")
    if "timestamp" not in obj:
        raise InvalidEvent("missing_field:timestamp")
    ts_ms = reference_timestamp(obj["timestamp"])
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
    if quantity is not None and not 0 <= quantity <= 4_294_967_295:
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
