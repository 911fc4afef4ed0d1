"""``journey worker --processes N``: checks, per-instance environment, and the supervisor.

The supervisor is driven with small Python children standing in for workers (a worker
needs Kafka; tests/integration/worker/test_worker_processes.py runs real ones). It runs
in a process of its own, so that the signals the tests send reach it and not pytest.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streams.cli import main
from streams.errors import ConfigError
from streams.settings import Settings
from streams.worker.supervisor import (
    MAX_LINE,
    _Pipe,
    check_process_count,
    exit_status,
    instance_environment,
)

SERVER = {"JOURNEY_CLICKHOUSE_URL": "clickhouse://127.0.0.1:9000/journey"}


# ---------------------------------------------------------------- checks


@pytest.mark.parametrize("processes", [0, -1])
def test_fewer_than_one_process_is_refused(processes: int) -> None:
    """--processes below 1 is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match=f"--processes {processes}: run at least 1"):
        check_process_count(Settings.from_env(SERVER), processes)


def test_one_process_needs_nothing_more() -> None:
    """N=1 is today's worker: embedded chdb and any partition count are fine."""
    check_process_count(Settings.from_env({"JOURNEY_PARTITIONS": "1"}), 1)


def test_several_processes_need_a_clickhouse_server() -> None:
    """N>1 with the embedded chdb default is refused, naming JOURNEY_CLICKHOUSE_URL."""
    with pytest.raises(ConfigError, match="needs a ClickHouse server: set JOURNEY_CLICKHOUSE_URL"):
        check_process_count(Settings.from_env({}), 2)


def test_more_processes_than_partitions_is_refused() -> None:
    """N above JOURNEY_PARTITIONS is refused (they would idle); N equal to it is fine."""
    settings = Settings.from_env({**SERVER, "JOURNEY_PARTITIONS": "3"})
    check_process_count(settings, 3)
    with pytest.raises(ConfigError, match=r"more than JOURNEY_PARTITIONS=3.*idle"):
        check_process_count(settings, 4)


def test_metrics_ports_must_fit() -> None:
    """The last instance's metrics port must still be a TCP port."""
    settings = Settings.from_env({**SERVER, "JOURNEY_METRICS_PORT": "65535"})
    with pytest.raises(ConfigError, match="to 65536; lower JOURNEY_METRICS_PORT"):
        check_process_count(settings, 2)


@pytest.mark.parametrize(
    ("argv", "environment", "message"),
    [
        (["--processes", "2"], {}, "needs a ClickHouse server: set JOURNEY_CLICKHOUSE_URL"),
        (["--processes", "0"], SERVER, "--processes 0: run at least 1 worker process"),
        (["--processes", "3"], {**SERVER, "JOURNEY_PARTITIONS": "2"}, "JOURNEY_PARTITIONS=2"),
    ],
    ids=["embedded", "zero", "too-many"],
)
def test_command_refuses_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    environment: dict[str, str],
    message: str,
) -> None:
    """`journey worker` prints one error line, no traceback, and exits 2, starting nothing."""
    for name in [n for n in os.environ if n.startswith("JOURNEY_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["worker", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("journey worker: error: ")
    assert message in err
    assert err.count("\n") == 1, err


def test_help_describes_processes(capsys: pytest.CaptureFixture[str]) -> None:
    """`journey worker --help` explains --processes: ports, folders and what it needs."""
    with pytest.raises(SystemExit):
        main(["worker", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--processes N" in text
    assert "JOURNEY_DATA_DIR/worker-I" in text
    assert "JOURNEY_METRICS_PORT + I" in text
    assert "Needs JOURNEY_CLICKHOUSE_URL" in text


# ---------------------------------------------------------------- environment and status


def test_each_instance_gets_its_own_folder_and_port() -> None:
    """Instance I: data dir DATA/worker-I, metrics port BASE+I, everything else inherited."""
    parent = {
        **SERVER,
        "JOURNEY_DATA_DIR": "/var/lib/journey",
        "JOURNEY_METRICS_PORT": "9500",
        "JOURNEY_APP_ID": "shop",
        "PYTHONPATH": "/src",
        "PATH": "/usr/bin",
    }
    settings = Settings.from_env(parent)
    envs = [instance_environment(parent, settings, i) for i in range(3)]
    assert [e["JOURNEY_DATA_DIR"] for e in envs] == [
        "/var/lib/journey/worker-0",
        "/var/lib/journey/worker-1",
        "/var/lib/journey/worker-2",
    ]
    assert [e["JOURNEY_METRICS_PORT"] for e in envs] == ["9500", "9501", "9502"]
    own = ("JOURNEY_DATA_DIR", "JOURNEY_METRICS_PORT")
    inherited = {k: v for k, v in parent.items() if k not in own}
    for env in envs:
        assert {k: v for k, v in env.items() if k not in own} == inherited
    assert parent["JOURNEY_DATA_DIR"] == "/var/lib/journey", "the parent's mapping is untouched"


def test_default_folder_and_port_are_the_base() -> None:
    """Without JOURNEY_DATA_DIR / JOURNEY_METRICS_PORT the defaults are the base."""
    env = instance_environment({}, Settings.from_env({}), 1)
    assert env == {"JOURNEY_DATA_DIR": str(Path(".journey") / "worker-1"),
                   "JOURNEY_METRICS_PORT": "9465"}  # fmt: skip


@pytest.mark.parametrize(("returncode", "status"), [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_exit_status_follows_the_shell(returncode: int, status: int) -> None:
    """A child killed by signal S counts as 128 + S, as a shell and systemd report it."""
    assert exit_status(returncode) == status


# ---------------------------------------------------------------- output


def test_output_is_copied_line_by_line_after_the_instance() -> None:
    """Lines cut across reads are joined; an unfinished last line is copied at the end."""
    out = io.BytesIO()
    pipe = _Pipe(io.BytesIO(), b"worker-1: ", out)
    pipe.feed(b"\none\ntw")
    pipe.feed(b"o\nthr")
    assert out.getvalue() == b"worker-1: \nworker-1: one\nworker-1: two\n"
    pipe.feed(b"ee")
    pipe.feed(b"")
    assert out.getvalue().endswith(b"worker-1: two\nworker-1: three\n")
    pipe.feed(b"")
    assert out.getvalue().endswith(b"worker-1: three\n"), "nothing more at a second end"


def test_a_very_long_line_is_not_held() -> None:
    """A line longer than MAX_LINE is copied in pieces instead of growing the buffer."""
    out = io.BytesIO()
    pipe = _Pipe(io.BytesIO(), b"w: ", out)
    pipe.feed(b"x" * (MAX_LINE + 1))
    assert out.getvalue() == b"w: " + b"x" * (MAX_LINE + 1) + b"\n"
    assert pipe.pending == b""


# ---------------------------------------------------------------- the supervisor

#: Runs a WorkerSupervisor over CHILD scripts: argv = folder, children, stop timeout.
SUPERVISOR = """
import os, sys
from streams.worker.supervisor import WorkerSupervisor
folder, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
envs = [{**os.environ, "TEST_FOLDER": folder, "TEST_INSTANCE": str(i)} for i in range(count)]
supervisor = WorkerSupervisor(
    [[sys.executable, "-c", os.environ["TEST_CHILD"]]] * count, envs,
    stdout=sys.stdout.buffer, stderr=sys.stderr.buffer, stop_timeout_s=timeout,
)
sys.exit(supervisor.run())
"""

#: A stand-in worker: writes its pid file, says so, then sleeps (at most 60 s) until
#: SIGTERM or SIGINT, which it answers with "stopping" and status 0. TEST_MODE changes that:
#: "stubborn" ignores them, "crash" (instance 0 only) exits 3 once all are up.
CHILD = """
import os, signal, sys, time
env = os.environ
folder, instance, mode = env["TEST_FOLDER"], env["TEST_INSTANCE"], env["TEST_MODE"]
def stop(signum, frame):
    print("stopping on", signal.Signals(signum).name, flush=True)
    sys.exit(0)
for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, signal.SIG_IGN if mode == "stubborn" else stop)
with open(os.path.join(folder, f"{instance}.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.rename(os.path.join(folder, f"{instance}.tmp"), os.path.join(folder, f"{instance}.pid"))
print("started", flush=True)
print("a warning", file=sys.stderr, flush=True)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if mode == "crash" and instance == "0" and os.path.exists(os.path.join(folder, "1.pid")):
        sys.exit(3)
    time.sleep(0.05)
sys.exit(5)
"""


def running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` every 50 ms; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class Group:
    """A supervisor process over CHILD stand-ins, and the pids of its children."""

    def __init__(self, folder: Path, count: int, mode: str, stop_timeout_s: float) -> None:
        self.folder = folder
        self.count = count
        self.out = folder / "out.log"
        self.err = folder / "err.log"
        env = {**os.environ, "TEST_CHILD": CHILD, "TEST_MODE": mode}
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", SUPERVISOR, str(folder), str(count), str(stop_timeout_s)],
                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def pids(self) -> list[int]:
        """The children's pids, once every one has written its file (bounded wait)."""
        files = [self.folder / f"{i}.pid" for i in range(self.count)]
        wait_until(lambda: all(f.exists() for f in files), 20, "the children to start")
        return [int(f.read_text()) for f in files]

    def wait(self, timeout_s: float = 20) -> int:
        """The supervisor's exit status (bounded wait)."""
        return self.proc.wait(timeout_s)

    def cleanup(self) -> None:
        """SIGKILL whatever is still running: the supervisor, then its children."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for path in self.folder.glob("*.pid"):
            pid = int(path.read_text())
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def groups(tmp_path: Path) -> Iterator[Callable[..., Group]]:
    """Factory of supervised groups; every process is killed after the test."""
    made: list[Group] = []

    def make(count: int = 2, mode: str = "normal", stop_timeout_s: float = 10) -> Group:
        folder = tmp_path / f"group-{len(made)}"
        folder.mkdir()
        made.append(Group(folder, count, mode, stop_timeout_s))
        return made[-1]

    yield make
    for group in made:
        group.cleanup()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_reaches_every_child_and_exits_zero(
    groups: Callable[..., Group], signum: signal.Signals
) -> None:
    """SIGTERM or SIGINT: each child gets it, the group exits 0, nothing keeps running."""
    group = groups(count=2)
    pids = group.pids()
    group.proc.send_signal(signum)
    assert group.wait() == 0
    assert not any(running(pid) for pid in pids)
    out = group.out.read_text()
    for i in range(2):
        assert f"worker-{i}: started\n" in out
        assert f"worker-{i}: stopping on {signum.name}\n" in out
    err = group.err.read_text()
    assert "worker-0: a warning\n" in err
    assert "worker-1: a warning\n" in err


def test_a_child_that_ignores_the_stop_is_killed_after_the_timeout(
    groups: Callable[..., Group],
) -> None:
    """A child still running stop_timeout_s after SIGTERM is SIGKILLed: status 137."""
    group = groups(count=2, mode="stubborn", stop_timeout_s=1)
    pids = group.pids()
    began = time.monotonic()
    group.proc.terminate()
    assert group.wait() == 137
    assert 1 <= time.monotonic() - began < 10
    assert not any(running(pid) for pid in pids)
    assert "did not stop within 1 s: SIGKILL" in group.err.read_text()


def test_a_crashed_child_stops_the_others_with_its_status(groups: Callable[..., Group]) -> None:
    """A child exiting 3 on its own: the others get SIGTERM, the supervisor exits 3."""
    group = groups(count=3, mode="crash")
    pids = group.pids()
    assert group.wait() == 3
    assert not any(running(pid) for pid in pids)
    out = group.out.read_text()
    assert "worker-1: stopping on SIGTERM" in out
    assert "worker-2: stopping on SIGTERM" in out
    assert "worker-0 (pid" in group.err.read_text()


def test_a_killed_child_stops_the_group_with_137(groups: Callable[..., Group]) -> None:
    """A SIGKILLed child: the supervisor stops the other one and exits 128 + 9."""
    group = groups(count=2)
    pids = group.pids()
    os.kill(pids[1], signal.SIGKILL)
    assert group.wait() == 137
    assert not running(pids[0])
    assert "worker-0: stopping on SIGTERM" in group.out.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_a_killed_supervisor_takes_its_children_along(groups: Callable[..., Group]) -> None:
    """SIGKILL of the supervisor: the kernel SIGKILLs every child (no orphan left running)."""
    group = groups(count=2)
    pids = group.pids()
    group.proc.kill()
    group.wait()
    wait_until(lambda: not any(running(pid) for pid in pids), 10, "the children to die")
