"""Helpers of the alerting test: the compressed feed, thresholds measured from it, the
private Prometheus/Alertmanager configuration derived from the real files, and polling.

Why the feed is compressed: ``journey generate --rate`` ties event time to wall time, and
the generator's sessions last minutes (a cart, a checkout, a 45-second payment). A session
timeout short enough for a quick test (a few seconds) cuts every session into fragments,
and the fragment holding the add_to_cart never holds the purchase: abandonment is 1.00
before, during and after the spike (measured with :func:`cart_sessions`). So the generator
writes the run to a file (seeded, as fast as it can) and :class:`CompressedFeed` sends it
to Kafka with event time running ``compression`` times faster than the wall clock: whole
sessions, a session timeout of 120 s of event time, and that is 4 s of wall time.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import (
    BROKERS,
    ROOT,
    STACK,
    free_port,
    poll,
)
from support import WorkerProcess as WorkerProcess  # re-exported: the tests import it from here

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer

RULES = ROOT / "deploy" / "prometheus" / "rules"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"

#: Windows of the test rules: each production window of journey.recording.yml and the
#: duration it becomes here. "1w" (the week-ago offset) stays: a fresh Prometheus has no
#: week-old data, so the test exercises the `or` fallback to the recent-hours baseline.
WINDOWS = {"5m": "10s", "15m": "30s", "3h": "60s", "1h": "30s", "1w": "1w"}
#: Every `for:` of the test rules.
FOR = "5s"


# ---------------------------------------------------------------- the generated run


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One generated message: event time, visitor key, type, and the raw JSON line."""

    ts_ms: int
    key: str
    event_type: str
    line: bytes


def read_feed(path: Path) -> list[FeedEvent]:
    """The generator's JSON Lines output, in file (event-time) order."""
    events = []
    for line in path.read_bytes().splitlines():
        obj = json.loads(line)
        raw = obj["timestamp"]
        if isinstance(raw, int):
            ts_ms = raw
        else:
            ts_ms = int(datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() * 1000)
        key = obj.get("anonymous_id") or obj["user_id"]
        events.append(FeedEvent(ts_ms, key, obj["event_type"], line))
    return events


@dataclass(frozen=True, slots=True)
class CartSession:
    """A session with an add_to_cart, as our own grouping sees it."""

    start_ms: int
    close_ms: int  # event time at which the watermark passes last event + timeout
    abandoned: bool


def cart_sessions(
    events: Iterable[FeedEvent], timeout_ms: int, lateness_ms: int
) -> list[CartSession]:
    """Group events per visitor by the inactivity gap, independently of the worker's code.

    A session closes when the watermark (max event time - lateness) passes its last event
    + timeout, i.e. once event time reaches last + timeout + lateness.
    """
    by_visitor: dict[str, list[FeedEvent]] = {}
    for event in events:
        by_visitor.setdefault(event.key, []).append(event)
    found = []
    for visitor_events in by_visitor.values():
        visitor_events.sort(key=lambda e: e.ts_ms)
        session: list[FeedEvent] = []
        for event in [*visitor_events, None]:
            if event is None or (session and event.ts_ms - session[-1].ts_ms > timeout_ms):
                types = {e.event_type for e in session}
                if "add_to_cart" in types:
                    found.append(
                        CartSession(
                            session[0].ts_ms,
                            session[-1].ts_ms + timeout_ms + lateness_ms,
                            "purchase" not in types,
                        )
                    )
                session = []
            if event is not None:
                session.append(event)
    return found


@dataclass(frozen=True, slots=True)
class SpikeThresholds:
    """Test thresholds derived from what the generated spike really does."""

    normal_ratio: float  # abandonment of cart sessions started outside the spike
    spike_ratio: float  # abandonment of cart sessions started inside it
    carts_per_wall_s: float  # cart sessions closing per wall second before the spike
    margin: float
    min_carts: int
    min_baseline_carts: int


def measure_spike(
    sessions: list[CartSession],
    start_ms: int,
    spike_ms: tuple[int, int],
    compression: float,
    short_window_s: float,
) -> SpikeThresholds:
    """Thresholds halfway between normal and spike abandonment, guards from the cart rate."""
    inside = [s for s in sessions if spike_ms[0] <= s.start_ms < spike_ms[1]]
    outside = [s for s in sessions if not spike_ms[0] <= s.start_ms < spike_ms[1]]
    normal = sum(s.abandoned for s in outside) / len(outside)
    spike = sum(s.abandoned for s in inside) / len(inside)
    before = [s for s in sessions if s.close_ms < spike_ms[0]]
    wall_s = (spike_ms[0] - start_ms) / 1000 / compression
    per_s = len(before) / wall_s
    return SpikeThresholds(
        normal_ratio=normal,
        spike_ratio=spike,
        carts_per_wall_s=per_s,
        margin=round((spike - normal) / 2, 3),
        # Half of what a short window holds on normal traffic ...
        min_carts=max(5, int(per_s * short_window_s / 2)),
        # ... and a baseline of at least 20 s of normal traffic (no page on a baseline made
        # of the first handful of sessions).
        min_baseline_carts=max(10, int(per_s * 20)),
    )


class CompressedFeed(threading.Thread):
    """Sends the feed to Kafka, event time running ``compression`` times the wall clock."""

    def __init__(self, topic: str, events: list[FeedEvent], start_ms: int, compression: float):
        """A feed of ``events`` whose event time ``start_ms`` is sent when the thread starts."""
        super().__init__(name=f"compressed-feed-{topic}", daemon=True)
        self.topic = topic
        self.events = events
        self.start_ms = start_ms
        self.compression = compression
        self.sent = 0
        self.began = 0.0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def wall_of(self, ts_ms: int) -> float:
        """time.monotonic() at which the event stamped ``ts_ms`` is sent."""
        return self.began + (ts_ms - self.start_ms) / 1000 / self.compression

    def run(self) -> None:
        """Send every event at its compressed time, until the end or stop()."""
        try:
            producer = KafkaProducer(bootstrap_servers=BROKERS, acks=1, linger_ms=20)
            try:
                self.began = time.monotonic()
                for event in self.events:
                    ahead = self.wall_of(event.ts_ms) - time.monotonic()
                    if ahead > 0.005 and self._stop_event.wait(ahead):
                        return
                    if self._stop_event.is_set():
                        return
                    producer.send(self.topic, key=event.key.encode(), value=event.line)
                    self.sent += 1
                producer.flush(timeout=30)
            finally:
                producer.close(timeout=10)
        except BaseException as exc:  # reported by check(), in the test's thread
            self.error = exc

    def check(self) -> None:
        """Fail if sending failed."""
        if self.error is not None:
            raise AssertionError(f"the feed to Kafka failed: {self.error!r}") from self.error

    def stop(self) -> None:
        """Stop sending and wait for the thread (teardown)."""
        self._stop_event.set()
        if self.is_alive():
            self.join(30)


# ---------------------------------------------------------------- configuration


def _scale(expr: str) -> str:
    """``expr`` with every range and offset duration replaced by its WINDOWS value."""

    def swap(match: re.Match[str]) -> str:
        duration = match.group(2)
        if duration not in WINDOWS:
            raise AssertionError(f"window {duration!r} of the rules has no test value in WINDOWS")
        return f"{match.group(1)}{WINDOWS[duration]}{match.group(3)}"

    return re.sub(r"(\[|offset\s+)(\d+[smhdwy])(\]|\b)", swap, expr)


def write_test_rules(folder: Path, thresholds: dict[str, float]) -> list[Path]:
    """The real rule files with short windows, short `for:` and the given thresholds.

    ``thresholds`` maps a ``journey:threshold:*`` record name to its test value; the
    alert expressions themselves are copied unchanged.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    replaced = set()
    for path in sorted(RULES.glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        for group in data["groups"]:
            group.pop("interval", None)  # evaluate at the test's global 1 s
            for rule in group["rules"]:
                rule["expr"] = _scale(rule["expr"])
                if "for" in rule:
                    rule["for"] = FOR
                if rule.get("record") in thresholds:
                    rule["expr"] = f"vector({thresholds[rule['record']]})"
                    replaced.add(rule["record"])
        target = folder / path.name
        target.write_text(yaml.safe_dump(data, sort_keys=False))
        written.append(target)
    assert replaced == set(thresholds), f"unknown thresholds {set(thresholds) - replaced}"
    return written


def write_prometheus_config(path: Path, rules: Path, worker_port: int, am_port: int) -> None:
    """Scrape the worker every second, evaluate every second, alert to our Alertmanager."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules / "*.yml")],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am_port}"]}]}]
        },
        "scrape_configs": [
            {
                # The job name the rules (up{job="journey-worker"}) rely on.
                "job_name": "journey-worker",
                "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def write_alertmanager_config(path: Path, webhook_port: int) -> None:
    """The real Alertmanager config, webhooks pointed at our receiver, waits shortened."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        for key, value in (
            ("group_wait", "1s"),
            ("group_interval", "2s"),
            ("repeat_interval", "1m"),
        ):
            if key in route or route is config["route"]:
                route[key] = value
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            suffix = urllib.parse.urlsplit(hook["url"]).path
            hook["url"] = f"http://127.0.0.1:{webhook_port}{suffix}"
    path.write_text(yaml.safe_dump(config, sort_keys=False))


# ---------------------------------------------------------------- the webhook receiver


@dataclass
class Notification:
    """One webhook call from Alertmanager."""

    path: str
    body: dict[str, Any]

    def has(self, alertname: str, status: str) -> bool:
        """True when it carries ``alertname`` in ``status`` (firing/resolved)."""
        return any(
            a["labels"].get("alertname") == alertname and a["status"] == status
            for a in self.body.get("alerts", [])
        )


@dataclass
class WebhookReceiver:
    """An HTTP server that records Alertmanager's webhook notifications."""

    port: int
    received: list[Notification] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        """Serve in a background thread."""
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(Notification(self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


# ---------------------------------------------------------------- HTTP APIs and polling


def get_json(url: str) -> Any:
    """GET ``url`` as JSON; None when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def metrics_up(port: int) -> bool:
    """True once a /metrics endpoint on ``port`` answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2):
            return True
    except OSError:
        return False


def prometheus_value(port: int, expr: str) -> float | None:
    """The single value of an instant query, or None when it is empty."""
    query = urllib.parse.urlencode({"query": expr})
    answer = get_json(f"http://127.0.0.1:{port}/api/v1/query?{query}")
    if not answer or answer.get("status") != "success" or not answer["data"]["result"]:
        return None
    return float(answer["data"]["result"][0]["value"][1])


def prometheus_alert_state(port: int, alertname: str) -> str | None:
    """State of ``alertname`` in Prometheus (pending, firing; "no answer"); None if inactive."""
    answer = get_json(f"http://127.0.0.1:{port}/api/v1/alerts")
    if answer is None:
        return "no answer"
    for alert in answer.get("data", {}).get("alerts", []):
        if alert["labels"].get("alertname") == alertname:
            return str(alert["state"])
    return None


def alertmanager_alerts(port: int, alertname: str) -> list[dict[str, Any]] | None:
    """Alerts called ``alertname`` that Alertmanager holds as not resolved; None: no answer."""
    query = urllib.parse.urlencode({"filter": f'alertname="{alertname}"'})
    answer = get_json(f"http://127.0.0.1:{port}/api/v2/alerts?{query}")
    return None if answer is None else list(answer)


def wait_for(
    check: Callable[[], Any], *, timeout_s: float, what: str, describe: Callable[[], str],
    interval_s: float = 1.0,
) -> Any:  # fmt: skip
    """:func:`support.poll`, once a second by default, with ``describe`` on a line of its own."""
    return poll(check, timeout_s=timeout_s, interval_s=interval_s, describe=describe, what=what,
                separator="\n")  # fmt: skip


# ---------------------------------------------------------------- processes and services


#: Worker settings of the test, in event time where they are durations of event time.
#: The feed runs event time 30x the wall clock (see alertkit), so the 120 s session
#: timeout and 30 s lateness are 4 s and 1 s of wall time; idle grace is wall time.
WORKER_SETTINGS = {
    "SESSION_TIMEOUT_S": "120",
    "ALLOWED_LATENESS_S": "30",
    "IDLE_GRACE_S": "2",
    "PARTITIONS": "1",
    "FLUSH_INTERVAL_S": "1",
}


@dataclass(frozen=True)
class RunNames:
    """Unique Kafka topics, consumer group and ClickHouse database of one run."""

    prefix: str
    database_url: str

    @property
    def input_topic(self) -> str:
        """The topic the feed writes and the worker reads."""
        return f"{self.prefix}-in"


@dataclass
class PrivateStack:
    """Prometheus + Alertmanager of one test, run by deploy/stack.sh on free ports."""

    folder: Path
    prometheus_port: int = field(default_factory=free_port)
    alertmanager_port: int = field(default_factory=free_port)

    @property
    def env(self) -> dict[str, str]:
        """Environment that makes deploy/stack.sh run only our two services."""
        env = dict(os.environ)
        env.update(
            STACK_DIR=str(self.folder / "stack"),
            STACK_SERVICES="prometheus alertmanager",
            PROMETHEUS_PORT=str(self.prometheus_port),
            ALERTMANAGER_PORT=str(self.alertmanager_port),
            PROMETHEUS_CONFIG=str(self.folder / "prometheus.yml"),
            ALERTMANAGER_CONFIG=str(self.folder / "alertmanager.yml"),
            PYTHON=sys.executable,
            STACK_WAIT_S="60",
        )
        return env

    def stack(self, command: str) -> subprocess.CompletedProcess[str]:
        """Run ``deploy/stack.sh COMMAND`` for this stack."""
        return subprocess.run(
            [str(STACK), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def up(self, worker_port: int, webhook_port: int, thresholds: dict[str, float]) -> None:
        """Write the configs (rules derived from the real ones) and start both services."""
        rules = self.folder / "rules"
        write_test_rules(rules, thresholds)
        for attempt in range(3):
            write_prometheus_config(
                self.folder / "prometheus.yml", rules, worker_port, self.alertmanager_port
            )
            write_alertmanager_config(self.folder / "alertmanager.yml", webhook_port)
            started = self.stack("up")
            if started.returncode == 0:
                return
            # A free port can be taken between choosing it and binding it (the ephemeral
            # range is shared with outgoing connections, e.g. Kafka clients): new ports.
            if "already taken" not in started.stdout + started.stderr or attempt == 2:
                break
            self.stack("down")
            self.prometheus_port, self.alertmanager_port = free_port(), free_port()
        pytest.fail(f"deploy/stack.sh up failed:\n{started.stdout}\n{started.stderr}")

    def down(self) -> None:
        """Stop both services (teardown)."""
        self.stack("down")
