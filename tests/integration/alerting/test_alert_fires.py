"""CartAbandonmentSpike fired for real: generated traffic with an abandonment spike goes
through Kafka into a live worker, a private Prometheus scrapes it and evaluates the real
rules (short windows, thresholds measured from the generated run), and the alert reaches
a private Alertmanager and its pager webhook, then resolves after the spike.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alertkit import (
    WINDOWS,
    WORKER_SETTINGS,
    CompressedFeed,
    PrivateStack,
    RunNames,
    WebhookReceiver,
    WorkerProcess,
    alertmanager_alerts,
    cart_sessions,
    measure_spike,
    metrics_up,
    prometheus_alert_state,
    prometheus_value,
    read_feed,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ALERT = "CartAbandonmentSpike"
#: Event-time seconds per wall second of the feed.
COMPRESSION = 30.0
#: Events per second of event time: 180 per wall second, well within one worker's pace.
SIM_RATE = 6.0
#: The spike, in event time after the start: wall seconds 50-80 of the feed.
SPIKE_START_S = 1500
SPIKE_LENGTH_S = 900
#: Event time generated; the feed is stopped as soon as the alert has resolved.
RUN_S = 7200
SHORT_WINDOW_S = float(WINDOWS["15m"].removesuffix("s"))


def generate(path: Path, start: datetime) -> None:
    """``journey generate`` of the abandonment-spike scenario into ``path`` (seeded)."""
    journey = Path(sys.executable).parent / "journey"
    proc = subprocess.run(
        [str(journey), "generate", "--out", str(path), "--seed", "20250601",
         "--start", start.isoformat().replace("+00:00", "Z"),
         "--duration", str(RUN_S), "--sim-rate", str(SIM_RATE),
         "--scenario", "abandonment-spike",
         "--spike-start", f"{SPIKE_START_S}s", "--spike-duration", f"{SPIKE_LENGTH_S}s"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cart_abandonment_spike_fires_and_resolves(
    names: RunNames,
    worker: WorkerProcess,
    private_stack: PrivateStack,
    webhook: WebhookReceiver,
    feeds: list[CompressedFeed],
    tmp_path: Path,
) -> None:
    """A generated abandonment spike fires CartAbandonmentSpike, pages, then resolves."""
    start = datetime.now(UTC).replace(microsecond=0)
    start_ms = int(start.timestamp() * 1000)
    spike_ms = (start_ms + SPIKE_START_S * 1000, start_ms + (SPIKE_START_S + SPIKE_LENGTH_S) * 1000)
    feed_path = tmp_path / "feed.jsonl"
    generate(feed_path, start)
    events = read_feed(feed_path)

    # Thresholds from the run itself, grouped by our own sessionization.
    measured = measure_spike(
        cart_sessions(
            events,
            int(WORKER_SETTINGS["SESSION_TIMEOUT_S"]) * 1000,
            int(WORKER_SETTINGS["ALLOWED_LATENESS_S"]) * 1000,
        ),
        start_ms,
        spike_ms,
        COMPRESSION,
        SHORT_WINDOW_S,
    )
    print(f"\nmeasured from the generated run: {measured}")
    assert measured.spike_ratio - measured.normal_ratio >= 0.25, (
        f"the generated spike is too weak to alert on: {measured}"
    )

    worker.start()
    wait_for(lambda: worker.alive and metrics_up(worker.metrics_port), timeout_s=90,
             what="the worker's /metrics endpoint", describe=worker.log_tail)  # fmt: skip
    private_stack.up(
        worker.metrics_port,
        webhook.port,
        {
            "journey:threshold:cart_abandonment_margin": measured.margin,
            "journey:threshold:cart_abandonment_min_carts": measured.min_carts,
            "journey:threshold:cart_abandonment_min_baseline_carts": measured.min_baseline_carts,
        },
    )
    prom, am = private_stack.prometheus_port, private_stack.alertmanager_port

    feed = CompressedFeed(names.input_topic, events, start_ms, COMPRESSION)
    feeds.append(feed)
    feed.start()
    wait_for(lambda: feed.began, timeout_s=30, what="the feed to start", describe=str)
    spike_wall = feed.wall_of(spike_ms[0]), feed.wall_of(spike_ms[1])
    timeline: list[str] = []

    def observe() -> str:
        """One line of what Prometheus sees now (kept for the failure message and -s)."""
        values = {
            name: prometheus_value(prom, f"journey:cart_abandonment:{name}")
            for name in ("ratio_short", "ratio_baseline")
        }
        carts = prometheus_value(prom, "journey:cart_sessions_closed:increase_short")
        line = (
            f"t={time.monotonic() - feed.began:6.1f}s short={values['ratio_short']} "
            f"baseline={values['ratio_baseline']} carts_short={carts} "
            f"state={prometheus_alert_state(prom, ALERT)}"
        )
        timeline.append(line)
        return line

    def describe() -> str:
        feed.check()
        return "\n".join(
            [*timeline[-40:], f"feed sent {feed.sent}", f"worker alive {worker.alive}",
             worker.log_tail()]
        )  # fmt: skip

    def state_is(wanted: str | None) -> bool:
        feed.check()
        observe()
        assert worker.alive, f"the worker exited\n{worker.log_tail()}"
        return prometheus_alert_state(prom, ALERT) == wanted

    # 1. Normal traffic up to the spike: the alert does not fire.
    while time.monotonic() < spike_wall[0]:
        assert not state_is("firing"), f"{ALERT} fired on normal traffic:\n{describe()}"
        time.sleep(1)

    # 2. The spike's sessions close: firing in Prometheus, then in Alertmanager and the pager.
    wait_for(lambda: state_is("firing"), timeout_s=120, what=f"{ALERT} firing in Prometheus",
             describe=describe)  # fmt: skip
    fired_at = time.monotonic()
    held = wait_for(lambda: alertmanager_alerts(am, ALERT), timeout_s=30,
                    what=f"{ALERT} in Alertmanager", describe=describe)  # fmt: skip
    assert held[0]["labels"]["severity"] == "critical"
    assert held[0]["annotations"]["runbook_url"] == "docs/runbooks.md#cartabandonmentspike"
    paged = wait_for(
        lambda: [n for n in webhook.received if n.has(ALERT, "firing")],
        timeout_s=30, what=f"a firing {ALERT} notification", describe=describe,
    )  # fmt: skip
    assert paged[0].path == "/alerts/critical", "critical alerts go to the pager receiver"

    # 3. Back to normal traffic: resolved in Prometheus, gone from Alertmanager, and the
    # pager is told, while cart sessions keep closing (not a silence that ends the alert).
    wait_for(lambda: state_is(None), timeout_s=120, what=f"{ALERT} resolved in Prometheus",
             describe=describe)  # fmt: skip
    resolved_at = time.monotonic()
    carts = prometheus_value(prom, "journey:cart_sessions_closed:increase_short")
    assert carts is not None, describe()
    assert carts >= measured.min_carts, describe()
    wait_for(lambda: alertmanager_alerts(am, ALERT) == [], timeout_s=60,
             what=f"{ALERT} resolved in Alertmanager", describe=describe)  # fmt: skip
    wait_for(
        lambda: [n for n in webhook.received if n.has(ALERT, "resolved")],
        timeout_s=60, what=f"a resolved {ALERT} notification", describe=describe,
    )  # fmt: skip
    print("\n".join(timeline))
    print(
        f"spike sent at t={spike_wall[0] - feed.began:.0f}-{spike_wall[1] - feed.began:.0f}s; "
        f"fired at t={fired_at - feed.began:.0f}s ({fired_at - spike_wall[0]:.0f}s after the "
        f"spike began); resolved at t={resolved_at - feed.began:.0f}s "
        f"({resolved_at - spike_wall[1]:.0f}s after it ended)"
    )
