"""Every PromQL expression of every dashboard runs against a real Prometheus that has data.

A private Prometheus (``deploy/stack.sh`` on a free port, state in tmp) scrapes a real
``journey worker`` every second and loads the project's recording and alert rules; the
worker reads generated traffic from the real Kafka broker and writes a fresh database on
the ClickHouse server. The alert baselines look 3 hours back (ending 15 minutes ago), so
before Prometheus starts, ``promtool tsdb create-blocks-from openmetrics`` writes that much
counter history into its data folder. Each expression, with Grafana's interval variables
replaced, must parse and return at least one finite sample. Every loop is bounded;
teardown stops the worker (SIGTERM, then SIGKILL), brings the private stack down, deletes
the topics and drops the database.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_support import JOURNEY, clean_env, fresh_server_url, open_server
from grafana_queries import PROMETHEUS_TYPE, ROOT, PanelQuery, expand_promql, queries
from support import free_port, poll

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKERS = os.environ.get("JOURNEY_TEST_BROKERS", "127.0.0.1:9092")
STACK = ROOT / "deploy" / "stack.sh"
RULES = ROOT / "deploy" / "prometheus" / "rules"
PROM_QUERIES = queries(PROMETHEUS_TYPE)
#: Grafana's $__rate_interval for a 1 s scrape interval is 4 s; one minute keeps every rate
#: defined for the whole test run after the 40 s of traffic.
RATE_INTERVAL = "1m"
#: Series the tests wait for before querying: rules of every group, the baselines included.
READY_SERIES = (
    "journey:cart_abandonment:ratio5m",
    "journey:events_rejected:rate5m",
    "journey:dropoff:ratio5m",
    "journey:cart_abandonment:ratio_short",
    "journey:events_rejected:ratio_short",
    "journey:cart_abandonment:ratio_baseline",
    "journey:conversion:ratio_baseline",
)
#: History backfilled before Prometheus starts, per minute: (metric, labels, increase). The
#: alert baselines look at the 3 hours ending 15 minutes ago, which a Prometheus started
#: for a test cannot have scraped; recorded history in a TSDB block stands in for it.
BACKFILL_PER_MINUTE: tuple[tuple[str, str, int], ...] = (
    ("journey_sessions_started", "", 100),
    ("journey_conversions", "", 3),
    ("journey_cart_sessions_closed", "", 10),
    ("journey_carts_abandoned", "", 7),
    ("journey_sessions_closed", 'furthest_stage="awareness",', 30),
    ("journey_sessions_closed", 'furthest_stage="consideration",', 55),
    ("journey_sessions_closed", 'furthest_stage="purchase",', 15),
)


def http_json(url: str, timeout_s: float = 10.0) -> Any:
    """GET ``url`` and decode its JSON body (Prometheus answers errors with JSON too)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read() or b"{}")


def instant_query(base: str, expr: str) -> dict[str, Any]:
    """The decoded answer of ``/api/v1/query`` for ``expr`` at the current time."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    answer: dict[str, Any] = http_json(url)
    return answer


def finite_samples(answer: dict[str, Any]) -> list[float]:
    """The finite sample values of a successful instant-query answer."""
    data = answer.get("data", {})
    values: list[float] = []
    if data.get("resultType") == "vector":
        values = [float(item["value"][1]) for item in data["result"]]
    elif data.get("resultType") == "scalar":
        values = [float(data["result"][1])]
    return [v for v in values if math.isfinite(v)]


def metrics_up(port: int) -> bool:
    """True once the worker's /metrics endpoint answers with journey metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return b"journey_events_total" in response.read()
    except OSError:
        return False


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def delete_topics(marker: str) -> None:
    """Delete every Kafka topic whose name contains ``marker`` (best effort)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=BROKERS, request_timeout_ms=15_000)
    except KafkaError:
        return
    try:
        doomed = [t for t in admin.list_topics() if marker in t]
        if doomed:
            with contextlib.suppress(KafkaError):
                admin.delete_topics(doomed)
    finally:
        admin.close()


def check_kafka() -> None:
    """Fail (never skip) with what to do when the broker is not reachable."""
    try:
        KafkaAdminClient(bootstrap_servers=BROKERS, request_timeout_ms=10_000).close()
    except KafkaError as exc:
        pytest.fail(
            f"Kafka is not reachable at {BROKERS} ({exc}); start it with `make up` "
            "or set JOURNEY_TEST_BROKERS"
        )


def write_prometheus_config(folder: Path, worker_port: int) -> Path:
    """A Prometheus config scraping the worker every second, loading the project's rules."""
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files:\n"
        f"  - {RULES}/*.yml\n"
        "scrape_configs:\n"
        "  - job_name: journey-worker\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{worker_port}']\n",
        encoding="utf-8",
    )
    return config


def backfill_history(data_dir: Path, now_s: int) -> None:
    """Write 3 h 45 min of counter history ending 16 minutes ago as TSDB blocks (promtool)."""
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    lines = []
    minutes = range(-240, -15)
    for family in dict.fromkeys(name for name, _, _ in BACKFILL_PER_MINUTE):
        lines.append(f"# TYPE {family} counter")
        for name, labels, step in BACKFILL_PER_MINUTE:
            if name != family:
                continue
            for i, minute in enumerate(minutes):
                lines.append(
                    f'{family}_total{{{labels}instance="backfill",job="journey-worker"}}'
                    f" {step * (i + 1)} {now_s + 60 * minute}"
                )
    lines.append("# EOF")
    data_dir.mkdir(parents=True, exist_ok=True)
    source = data_dir.parent / "backfill.om"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    made = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, f"promtool backfill failed:\n{made.stdout}\n{made.stderr}"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a private Prometheus holding 40 s of a real worker's metrics (and history)."""
    check_kafka()
    folder = tmp_path_factory.mktemp("prometheus")
    suffix = uuid.uuid4().hex[:10]
    marker = f"dash-{suffix}"
    worker_port, prom_port = free_port(), free_port()
    stack_env = clean_env(
        STACK_DIR=str(folder / "stack"),
        STACK_SERVICES="prometheus",
        PROMETHEUS_PORT=str(prom_port),
        PROMETHEUS_CONFIG=str(write_prometheus_config(folder, worker_port)),
        PYTHON=sys.executable,
        STACK_WAIT_S="60",
    )
    database_url = fresh_server_url("journey_dash_live")
    open_server(database_url).close()
    worker: subprocess.Popen[bytes] | None = None
    log_path = folder / "worker.log"
    log = log_path.open("wb")
    try:
        backfill_history(folder / "stack" / "prometheus" / "data", int(time.time()))
        up = subprocess.run(
            [str(STACK), "up"], env=stack_env, capture_output=True, text=True, timeout=120
        )
        assert up.returncode == 0, f"stack.sh up failed:\n{up.stdout}\n{up.stderr}"
        topic = f"{marker}-in"
        worker_env = clean_env(
            JOURNEY_BROKERS=BROKERS,
            JOURNEY_INPUT_TOPIC=topic,
            JOURNEY_APP_ID=f"{marker}-app",
            JOURNEY_SESSIONS_TOPIC=f"{marker}-sessions",
            JOURNEY_TRANSITIONS_TOPIC=f"{marker}-transitions",
            JOURNEY_DLQ_TOPIC=f"{marker}-dlq",
            JOURNEY_LATE_TOPIC=f"{marker}-late",
            JOURNEY_METRICS_PORT=str(worker_port),
            JOURNEY_CLICKHOUSE_URL=database_url,
            JOURNEY_DATA_DIR=str(folder / "worker"),
            JOURNEY_SESSION_TIMEOUT_S="3",
            JOURNEY_ALLOWED_LATENESS_S="1",
            JOURNEY_IDLE_GRACE_S="2",
        )
        worker = subprocess.Popen(
            [str(JOURNEY), "worker"],
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        poll(lambda: metrics_up(worker_port) or worker.poll() is not None,
             timeout_s=90, what="the worker's /metrics endpoint")  # fmt: skip
        assert worker.poll() is None, log_path.read_text(errors="replace")[-4000:]
        base = f"http://127.0.0.1:{prom_port}"
        # A little malformed input so the dead-letter series exist, as they would in production.
        generate = subprocess.run(
            [str(JOURNEY), "generate", "--rate", "500", "--duration", "40", "--topic", topic,
             "--brokers", BROKERS, "--malformed-ratio", "0.02", "--seed", "7"],
            env=clean_env(), capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert generate.returncode == 0, generate.stdout + generate.stderr
        for series in READY_SERIES:
            poll(lambda s=series: finite_samples(instant_query(base, s)),
                 timeout_s=180, what=f"recording rule {series} to have a value")  # fmt: skip
        assert worker.poll() is None, "the worker died while the traffic ran"
        yield base
    finally:
        if worker is not None:
            stop_process(worker)
        log.close()
        subprocess.run([str(STACK), "down"], env=stack_env, capture_output=True, timeout=120)
        delete_topics(marker)
        cleanup = open_server(database_url)
        cleanup.drop_database()
        cleanup.close()


def test_dashboards_have_promql() -> None:
    """The real-time and operations dashboards carry PromQL targets."""
    dashboards = {q.dashboard for q in PROM_QUERIES}
    assert {"journey-realtime", "journey-operations"} <= dashboards
    assert len(PROM_QUERIES) >= 20


@pytest.mark.parametrize("query", PROM_QUERIES, ids=lambda q: q.id)
def test_promql_returns_data(prometheus: str, query: PanelQuery) -> None:
    """Each panel expression parses and returns at least one finite sample from live data."""
    expr = expand_promql(query.text, rate_interval=RATE_INTERVAL)
    answer = instant_query(prometheus, expr)
    assert answer.get("status") == "success", f"{query.id}: {expr}\n{answer}"
    assert finite_samples(answer), f"{query.id} returned no finite sample: {expr}\n{answer}"


def test_dashboard_metrics_exist(prometheus: str) -> None:
    """Every metric or recording rule a dashboard names is a series Prometheus holds."""
    names = set(http_json(f"{prometheus}/api/v1/label/__name__/values")["data"])
    named = {
        (query.id, name)
        for query in PROM_QUERIES
        for name in re.findall(r"\b(journey[:_][A-Za-z0-9_:]*[A-Za-z0-9_])", query.text)
    }
    assert len(named) >= len(PROM_QUERIES)
    missing = sorted((qid, name) for qid, name in named if name not in names)
    assert not missing, f"dashboard series that Prometheus does not have: {missing}"
