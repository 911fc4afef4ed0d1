"""`make status` reports a stack that is down as down, with exit status 0."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_make_status_of_a_stack_that_is_down_says_down_and_exits_0(tmp_path: Path) -> None:
    """Every service `down`, then `stack: down` and how to start it; no `make: *** Error`."""
    env = dict(os.environ, STACK_DIR=str(tmp_path / "stack"))
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "status"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    services = ("kafka", "clickhouse", "prometheus", "alertmanager")
    for name in services:
        assert f"{name} down" in [" ".join(line.split()) for line in lines], result.stdout
    assert lines[-1] == "stack: down (start it with: make up)"
    assert "Error" not in result.stderr
    assert not (tmp_path / "stack").exists()  # status only looks
