"""The same replay into the ClickHouse 18.16 server and into chdb gives the same tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from replay_support import replay, stored_state, summary_text

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("source", ["otto_file", "generated_file"])
def test_server_and_embedded_replays_are_identical(
    source: str,
    server_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    request: pytest.FixtureRequest,
) -> None:
    """Server and chdb print the same summary JSON and hold the same session and order rows."""
    path = str(request.getfixturevalue(source))
    folder = str(tmp_path / "clickhouse")
    replay(capsys, folder, path)
    replay(capsys, server_url, path)
    embedded_summary = summary_text(capsys, folder)
    assert summary_text(capsys, server_url) == embedded_summary
    embedded_sessions, embedded_orders = stored_state(folder)
    server_sessions, server_orders = stored_state(server_url)
    assert len(embedded_sessions) > 100, "the replay should have written sessions"
    assert server_sessions == embedded_sessions
    assert server_orders == embedded_orders
