"""`pip install .` (not editable) gives a `journey` that works away from the source tree.

The package is built from a copy of this checkout's sources (pyproject.toml, README.md,
streams/ with its link streams/schemas, and schemas/: what the Dockerfile copies too; the
build leaves its build/ folder there, not here), the way a user installs it: pip's
isolated build, with setuptools from PyPI as pyproject.toml pins it, into a fresh venv.
Its dependencies are not downloaded again: a .pth line lets the venv import them from the
test's own environment, after its own site-packages, so ``streams`` itself comes from the
wheel (the test checks where it was imported from). Commands run in a folder outside the
checkout, with no PYTHONPATH, so nothing can be read from the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def _run(argv: list[str], cwd: Path, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with no PYTHONPATH or JOURNEY_* settings; fail showing its output."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "PYTHONPATH" and k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("JOURNEY_")
    }
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
    )
    assert result.returncode == 0, f"{' '.join(argv)} exited {result.returncode}:\n" + (
        result.stdout[-4000:] + result.stderr[-4000:]
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A venv with journey-streams installed by `pip install ROOT`; its bin folder, pip's output."""
    venv = tmp_path_factory.mktemp("wheel") / "venv"
    outside = venv.parent
    source = outside / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("streams", "schemas"):
        shutil.copytree(
            ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
        )
    _run([sys.executable, "-m", "venv", str(venv)], cwd=outside)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=outside,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "journey-test-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    pip = _run(
        [str(python), "-m", "pip", "install", "-v", "--no-deps", str(source)],
        cwd=outside,
    )
    return venv / "bin", pip.stdout + pip.stderr


def test_pip_install_prints_no_warning(installed: tuple[Path, str]) -> None:
    """Building and installing, even verbosely, prints no warning (the license table did)."""
    _, output = installed
    assert "Successfully installed journey-streams" in output
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    assert warnings == [], "\n".join(warnings)


def test_streams_and_its_schemas_come_from_the_wheel(installed: tuple[Path, str]) -> None:
    """The package, its migrations and stage rules are read from site-packages, not ROOT."""
    bin_dir, _ = installed
    code = (
        "import streams, streams.clickhouse.migrations as m, streams.engine.stages as s\n"
        "print(streams.__file__); print(m.MIGRATIONS_DIR); print(s.DEFAULT_RULES_PATH)\n"
        "print(len(m.load_migrations()), s.load_stage_rules(s.DEFAULT_RULES_PATH) == "
        "s.StageRules.default())"
    )
    out = _run([str(bin_dir / "python"), "-c", code], cwd=bin_dir.parent).stdout.splitlines()
    site = str(bin_dir.parent / "lib")
    for where in out[:3]:
        assert where.startswith(site), f"{where} is not inside the venv's {site}"
        assert not where.startswith(str(ROOT))
    assert out[3].split()[1] == "True"
    assert int(out[3].split()[0]) >= 1


def test_installed_journey_replays_a_file_and_prints_worker_help(
    installed: tuple[Path, str], tmp_path: Path
) -> None:
    """Outside the checkout: generate, replay (migrations applied), summary, worker --help."""
    bin_dir, _ = installed
    journey = str(bin_dir / "journey")
    _run([journey, "generate", "--events", "300", "--seed", "5", "--out", "events.jsonl"], tmp_path)
    replayed = _run([journey, "replay", "events.jsonl", "--embedded", "db"], tmp_path).stdout
    assert "300 lines, 300 events accepted, 0 rejected" in replayed
    summary = _run([journey, "summary", "--embedded", "db"], tmp_path).stdout
    assert '"events": 300' in summary
    help_text = _run([journey, "worker", "--help"], tmp_path).stdout
    assert help_text.startswith("usage: journey worker")
    assert "JOURNEY_BROKERS" in help_text
