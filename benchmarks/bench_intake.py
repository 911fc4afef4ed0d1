"""Intake throughput: messages/s of ``parse_payload`` and events/s of ``parse_event_dict``.

Usage::

    .venv/bin/journey generate --events 200000 --seed 1 --out /tmp/gen.jsonl
    .venv/bin/python benchmarks/bench_intake.py /tmp/gen.jsonl [--repeat 3] [--sessionize]

Without a file argument a small built-in factory makes realistic events, so the script runs
anywhere. Each figure is the best of ``--repeat`` runs (the least disturbed by other load).
Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streams.engine.intake import parse_event_dict, parse_payload

BATCH_SIZE = 100


def factory_lines(count: int, seed: int = 1) -> list[bytes]:
    """Events shaped like ``journey generate`` output (used when no JSONL file is given)."""
    rng = random.Random(seed)
    ts = 1_790_000_000_000
    uas = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/126.0.0.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    ]
    lines = []
    for i in range(count):
        ts += rng.randint(0, 20)
        sku = rng.randint(10000, 10200)
        url = f"https://shop.example.com/p/sku-{sku}"
        if rng.random() < 0.06:
            url += "?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
        event: dict[str, Any] = {
            "event_id": f"ev-{i:012d}",
            "event_type": rng.choice(["page_view", "product_view", "page_ping", "add_to_cart"]),
            "timestamp": ts if rng.random() < 0.1 else _iso(ts),
            "anonymous_id": f"anon-{rng.randint(0, 30000):08d}",
            "page": {"url": url, "path": f"/p/sku-{sku}", "title": f"Product {sku}"},
            "context": {"user_agent": rng.choice(uas), "locale": "en-US", "device_type": "desktop"},
        }
        if rng.random() < 0.5:
            event["page"]["referrer"] = "https://www.google.com/"
        if rng.random() < 0.5:
            event["properties"] = {"product_id": f"sku-{sku}", "price": 19.99, "currency": "EUR"}
        lines.append(orjson.dumps(event))
    return lines


def _iso(ts_ms: int) -> str:
    seconds, millis = divmod(ts_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def best_rate(units: int, run: Callable[[], object], repeat: int) -> float:
    """Highest units/s over ``repeat`` runs of ``run``."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return units / best


def _is_valid(line: bytes) -> bool:
    return not parse_payload(line, 253_402_300_799_999).rejections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jsonl", nargs="?", type=Path, help="events, one JSON object per line")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=int, default=200_000, help="use at most N lines")
    parser.add_argument("--sessionize", action="store_true", help="also time sessionize_all")
    args = parser.parse_args(argv)

    if args.jsonl is not None:
        with args.jsonl.open("rb") as handle:
            lines = [line.rstrip(b"\n") for _, line in zip(range(args.limit), handle, strict=False)]
    else:
        lines = factory_lines(args.limit)
    # Only valid events are timed (a file from `generate --malformed-ratio` has broken
    # lines; the intake's rejection path is not what this benchmark measures).
    lines = [line for line in lines if _is_valid(line)]
    dicts = [orjson.loads(line) for line in lines]
    # Generated timestamps run ahead of the wall clock; a late "now" keeps every event valid.
    now_ms = 253_402_300_799_999
    envelopes = [
        b'{"batch":[' + b",".join(lines[i : i + BATCH_SIZE]) + b"]}"
        for i in range(0, len(lines), BATCH_SIZE)
    ]

    first = parse_payload(lines[0], now_ms)
    accepted = sum(len(parse_payload(line, now_ms).events) for line in lines)
    print(f"{len(lines)} events, {accepted} accepted, first: {first.events[0].event_id}")

    def singles() -> None:
        for line in lines:
            parse_payload(line, now_ms)

    def batches() -> None:
        for envelope in envelopes:
            parse_payload(envelope, now_ms)

    def replay_dicts() -> None:
        for obj in dicts:
            parse_event_dict(obj, now_ms)

    def replay_lines() -> None:
        for line in lines:
            parse_event_dict(orjson.loads(line), now_ms)

    n = len(lines)
    rate = best_rate(n, singles, args.repeat)
    print(f"parse_payload, single-event messages: {rate:12,.0f} messages/s")
    rate = best_rate(len(envelopes), batches, args.repeat)
    print(
        f"parse_payload, batch envelopes of {BATCH_SIZE}:  {rate:12,.0f} messages/s"
        f" ({rate * BATCH_SIZE:,.0f} events/s)"
    )
    rate = best_rate(n, replay_dicts, args.repeat)
    print(f"parse_event_dict, decoded dicts:       {rate:12,.0f} events/s")
    rate = best_rate(n, replay_lines, args.repeat)
    print(f"orjson.loads + parse_event_dict:       {rate:12,.0f} events/s")

    if args.sessionize:
        from streams.engine.sessionizer import SessionConfig, sessionize_all
        from streams.engine.stages import StageRules

        events = [parse_event_dict(obj, now_ms) for obj in dicts]
        config, rules = SessionConfig(), StageRules.default()
        rate = best_rate(n, lambda: sessionize_all(events, config, rules), args.repeat)
        print(f"sessionize_all (events already parsed): {rate:11,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
