"""The demo hands its ClickHouse URL to its children through the environment, never argv."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from streams import demo
from streams.cli import main

URL = "clickhouse://ana:hunter22@127.0.0.1:9000/shop"


class _Child:
    """A child process that has already finished its work (the generator) or runs on."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], exited: bool) -> None:
        self.argv, self.env, self._code = list(argv), env, 0 if exited else None

    def poll(self) -> int | None:
        return self._code

    def send_signal(self, signum: int) -> None:
        self._code = -signum

    def wait(self, timeout: float | None = None) -> int | None:
        return self._code


def test_the_url_reaches_every_child_by_environment_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Worker, generator and summary get JOURNEY_CLICKHOUSE_URL; no argv or output holds it."""
    started: list[Any] = []

    def popen(argv: Sequence[str], env: dict[str, str], **_: Any) -> _Child:
        child = _Child(argv, env, exited="generate" in argv)
        started.append(child)
        return child

    def run(argv: Sequence[str], env: dict[str, str], **_: Any) -> Any:
        started.append(_Child(argv, env, exited=True))
        return subprocess.CompletedProcess(argv, 0, stdout="{}", stderr="")

    monkeypatch.setattr(demo.subprocess, "Popen", popen)
    monkeypatch.setattr(demo.subprocess, "run", run)
    monkeypatch.setattr(demo, "scrape", lambda url: {"journey_events_total": 1.0})
    monkeypatch.setenv("JOURNEY_CLICKHOUSE_URL", URL)
    argv = ["demo", "--seconds", "0.01", "--every", "0.01", "--data-dir", str(tmp_path)]
    assert main(argv) == 0
    assert [c.argv[3] for c in started] == ["worker", "generate", "summary"]
    for child in started:
        assert child.env["JOURNEY_CLICKHOUSE_URL"] == URL
        assert not any("hunter22" in arg for arg in child.argv), child.argv
    out, err = capsys.readouterr()
    assert "hunter22" not in out + err
    assert "ana:***@127.0.0.1" in out
