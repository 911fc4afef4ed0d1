"""``journey demo``: generated store traffic through Kafka, the worker and ClickHouse, live.

Starts the worker and the generator as child processes, prints live figures scraped from
the worker's real /metrics endpoint every few seconds, then stops the worker and prints the
summary read back from ClickHouse (``journey summary``) and where to look next.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from streams.clickhouse.address import redact_url
from streams.errors import JourneyError
from streams.settings import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``journey demo``."""
    parser = sub.add_parser(
        "demo",
        help="run generated traffic through Kafka, the worker and ClickHouse; print live figures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="traffic duration")
    parser.add_argument("--rate", type=float, default=2000.0, help="events per second")
    parser.add_argument(
        "--clickhouse",
        default="",
        help=(
            "clickhouse://host:9000/db (clickhouses:// for TLS) to use a server "
            "[env: JOURNEY_CLICKHOUSE_URL, which keeps a password out of the process list]; "
            "default: embedded chdb in --data-dir"
        ),
    )
    parser.add_argument("--data-dir", default=".journey/demo", help="embedded ClickHouse folder")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between live lines")
    parser.set_defaults(func=run)


def scrape(url: str) -> dict[str, float]:
    """The worker's /metrics summed by sample name, and also by ``name{label=value}``."""
    with urllib.request.urlopen(url, timeout=3) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
            for label, value in sample.labels.items():
                key = f"{sample.name}{{{label}={value}}}"
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def _metrics_url(settings: Settings) -> str:
    """Where the demo's worker serves /metrics: its host, or this machine for a wildcard."""
    host = settings.metrics_host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"  # an IPv6 address in a URL
    return f"http://{host}:{settings.metrics_port}/metrics"


def _live_line(m: Mapping[str, float], elapsed: float) -> str:
    carts = m.get("journey_cart_sessions_closed_total", 0.0)
    abandoned = m.get("journey_carts_abandoned_total", 0.0)
    ratio = f"{abandoned / carts:.0%}" if carts else "n/a"
    return (
        f"[{elapsed:5.0f}s] events {m.get('journey_events_total', 0):>8.0f}  "
        f"sessions {m.get('journey_sessions_started_total', 0):>6.0f}  "
        f"open {m.get('journey_open_sessions', 0):>6.0f}  "
        f"consideration {m.get('journey_stage_reached_total{stage=consideration}', 0):>6.0f}  "
        f"conversions {m.get('journey_conversions_total', 0):>5.0f}  "
        f"revenue {m.get('journey_revenue_total', 0):>10.2f}  "
        f"abandoned carts {ratio}  "
        f"dead-letter {m.get('journey_events_rejected_total', 0):>4.0f}"
    )


def _stop(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def run(args: argparse.Namespace) -> int:
    """Run the demo; the exit status is non-zero when no event made it through."""
    settings = Settings.from_env()
    run_id = uuid.uuid4().hex[:8]
    topic = f"journey-demo-{run_id}"
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # Each run gets its own topic, consumer group and (embedded) ClickHouse folder, so a
    # demo never mixes with an earlier one.
    worker_dir = data_dir / f"worker-{run_id}"
    server = args.clickhouse or settings.clickhouse_url
    target = server or str(worker_dir / "clickhouse")
    # The children get the URL (and any password in it) in their environment, never on
    # their command line, which every user of the host can read (ps, /proc/PID/cmdline).
    env = dict(os.environ)
    env.update(
        JOURNEY_INPUT_TOPIC=topic,
        JOURNEY_APP_ID=f"journey-demo-{run_id}",
        JOURNEY_DATA_DIR=str(worker_dir),
        JOURNEY_CLICKHOUSE_URL=server,
    )
    cli = [sys.executable, "-m", "streams.cli"]
    metrics_url = _metrics_url(settings)
    log_path = data_dir / f"worker-{run_id}.log"
    print(f"journey demo: topic {topic}, {args.rate:.0f} events/s for {args.seconds:.0f} s")
    print(f"journey demo: worker log {log_path}, metrics {metrics_url}")
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([*cli, "worker"], env=env, stdout=log, stderr=log)
        generator: subprocess.Popen[bytes] | None = None
        try:
            generator = subprocess.Popen(
                [*cli, "generate", "--topic", topic, "--rate", str(args.rate),
                 "--duration", str(args.seconds), "--seed", "7"],
                env=env,
            )  # fmt: skip
            started = time.monotonic()
            last: dict[str, float] = {}
            deadline = started + args.seconds + 30
            while time.monotonic() < deadline:
                time.sleep(args.every)
                if worker.poll() is not None:
                    raise JourneyError(f"the worker exited early; see {log_path}")
                try:
                    last = scrape(metrics_url)
                except OSError:
                    continue  # the worker is still starting
                print(_live_line(last, time.monotonic() - started), flush=True)
                if generator.poll() is not None and last.get("journey_clickhouse_pending_rows"):
                    continue
                if generator.poll() is not None and time.monotonic() - started > args.seconds:
                    break
        finally:
            if generator is not None:
                _stop(generator)
            _stop(worker)
    if not last.get("journey_events_total"):
        print(f"journey demo: no event reached the worker; see {log_path}", file=sys.stderr)
        return 1
    where = [] if server else ["--embedded", target]  # a server: JOURNEY_CLICKHOUSE_URL
    summary = subprocess.run(
        [*cli, "summary", *where, "--json"], env=env, capture_output=True, text=True, check=False
    )
    shown = ["--clickhouse", redact_url(server)] if server else where
    if summary.returncode != 0:
        print(summary.stderr, file=sys.stderr)
        return summary.returncode
    print("\nJourney figures read back from ClickHouse (journey summary --json):")
    print(json.dumps(json.loads(summary.stdout), indent=2))
    print(
        "\nWhere to look next:\n"
        f"  metrics        {metrics_url} (while a worker runs); Prometheus http://127.0.0.1:9090\n"
        f"  ClickHouse     {' '.join(shown)}: tables sessions, orders, raw_events, rollups\n"
        f"  summary again  .venv/bin/journey summary {' '.join(shown)} --json\n"
        "  dashboards     deploy/grafana/dashboards/*.json (docker compose up brings Grafana)\n"
        "  alerts         deploy/prometheus/rules/, runbooks in docs/runbooks.md"
    )
    return 0
