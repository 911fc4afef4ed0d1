"""Customer-level figures (SPEC 5b) of the hand-written fixture, replayed into both backends."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import pytest
from customer_fixture import CUSTOMER_FILE, CUSTOMER_KEYS, HAND_FIGURES
from reference_sql import reference_summary
from replay_support import journey, replay, summary_text, target_args

from streams.clickhouse.embedded import EmbeddedBackend
from streams.summary import parse_instant_ms

pytestmark = pytest.mark.integration


def _summary(capsys: pytest.CaptureFixture[str], target: str, period: tuple[str, ...]) -> str:
    status, out = journey(capsys, "summary", *target_args(target), "--json", *period)
    assert status == 0, f"journey summary {' '.join(period)} exited {status}:\n{out}"
    return out.strip()


def test_customer_figures_equal_the_hand_figures_on_both_backends(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stitching, repeats, advocacy and cohorts come out as worked by hand, byte-identically."""
    folder = str(tmp_path / "clickhouse")
    replay(capsys, folder, str(CUSTOMER_FILE))
    replay(capsys, server_url, str(CUSTOMER_FILE))
    for period, hand in HAND_FIGURES.items():
        embedded = _summary(capsys, folder, period)
        assert _summary(capsys, server_url, period) == embedded, period
        printed = json.loads(embedded)
        assert {key: printed[key] for key in CUSTOMER_KEYS} == hand, period


def test_the_sql_reference_gives_the_hand_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """reference_sql, recomputing from raw_events alone, agrees with the hand figures too."""
    folder = str(tmp_path / "clickhouse")
    replay(capsys, folder, str(CUSTOMER_FILE), "--raw-events")
    with closing(EmbeddedBackend(folder)) as backend:
        for period, hand in HAND_FIGURES.items():
            options = dict(zip(period[::2], period[1::2], strict=True))
            bounds = [options.get(name) for name in ("--from", "--to")]
            start, end = (None if b is None else parse_instant_ms(b, "period") for b in bounds)
            expected = reference_summary(backend, start, end)
            assert {key: expected[key] for key in CUSTOMER_KEYS} == hand, period


def test_generated_traffic_customers_equal_the_sql_reference(
    generated_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On generated traffic (logins, returning customers) the figures equal reference_sql's."""
    folder = str(tmp_path / "clickhouse")
    replay(capsys, folder, str(generated_file), "--raw-events")
    printed = json.loads(summary_text(capsys, folder))
    with closing(EmbeddedBackend(folder)) as backend:
        expected = reference_summary(backend)
        (linked,) = backend.query(
            "SELECT uniqExact(visitor_key) FROM sessions FINAL"
            " WHERE deleted = 0 AND link_user_id != ''"
        )[0]
    assert linked > 10, "the generated traffic should hold logged-in visitors"
    # The generator gives each account one device, so stitching merges a visitor's anonymous
    # sessions with its logged-in ones rather than visitors with each other.
    keys = [*CUSTOMER_KEYS, "clv_avg"]
    differing = {k: (printed[k], expected[k]) for k in keys if printed[k] != expected[k]}
    assert not differing, f"summary vs reference (printed, expected): {differing}"
