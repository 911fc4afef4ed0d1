"""Cost per event of ``JOURNEY_PII=hash`` and ``drop`` at intake, against ``keep``.

Usage::

    .venv/bin/journey generate --events 100000 --seed 1 --out /tmp/gen.jsonl
    .venv/bin/python benchmarks/bench_pii.py /tmp/gen.jsonl [--repeat 5]

Times ``parse_payload`` over every line (keep), then ``Pseudonymiser.parse`` (hash, drop),
each the best of ``--repeat`` runs; the difference per accepted event is what the mode
costs the intake. Also times one HMAC per id without the cache, and with every id cached,
so the cache's worth can be read off. Not a test: nothing here asserts on timing.
"""

from __future__ import annotations

import argparse
import hmac
import time
from collections.abc import Callable
from pathlib import Path

from streams.engine.intake import IntakeResult, parse_payload
from streams.engine.pii import Pseudonymiser

KEY = b"benchmark-key-0123456789abcdef!!"
NOW_MS = 1_900_000_000_000


def best(repeat: int, run: Callable[[], object]) -> float:
    """The shortest of ``repeat`` timed runs of ``run``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    """Print µs per event of each mode and of the hash alone."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    lines = args.path.read_bytes().splitlines()
    events = sum(len(parse_payload(line, NOW_MS).events) for line in lines)

    def parse_all(parse: Callable[[bytes, int], IntakeResult]) -> Callable[[], object]:
        return lambda: [parse(line, NOW_MS) for line in lines]

    keep = best(args.repeat, parse_all(parse_payload))
    print(f"{len(lines)} lines, {events} events")
    print(f"keep  parse          {keep / events * 1e6:6.2f} µs/event")
    for mode in ("hash", "drop"):
        # A fresh pseudonymiser per run: the cache starts empty, as after a start-up.
        def run(mode: str = mode) -> object:
            return parse_all(Pseudonymiser(mode, KEY).parse)()

        seconds = best(args.repeat, run)
        print(
            f"{mode:5} parse          {seconds / events * 1e6:6.2f} µs/event "
            f"(+{(seconds - keep) / events * 1e6:.2f})"
        )
    ids = [
        ev.anonymous_id or ev.user_id for line in lines for ev in parse_payload(line, NOW_MS).events
    ]
    raw = best(
        args.repeat,
        lambda: [hmac.digest(KEY, i.encode(), "sha256").hex()[:32] for i in ids],
    )
    print(f"HMAC-SHA256 per id, uncached {raw / len(ids) * 1e6:6.2f} µs")
    warm = Pseudonymiser("hash", KEY)
    for i in ids:
        warm.pseudonym(i)
    cached = best(args.repeat, lambda: [warm.pseudonym(i) for i in ids])
    print(f"pseudonym per id, cached     {cached / len(ids) * 1e6:6.2f} µs")
    distinct = len(set(ids))
    print(f"{distinct} distinct visitor keys among {len(ids)} events")


if __name__ == "__main__":
    main()
