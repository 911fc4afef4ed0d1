"""``journey worker --processes N``: N worker processes of one consumer group, run as one.

Python applies events on one core per process, so a host uses more cores by running more
worker processes with the same ``JOURNEY_APP_ID``: Faust's consumer group gives each a
share of the partitions. :class:`WorkerSupervisor` starts them
(``python -m streams.cli worker``), each with the environment of the command except its
own data folder and metrics port (:func:`instance_environment`), copies their output to
its own with the instance in front of every line, and ends with them:

- SIGTERM or SIGINT to the supervisor goes to every child; it waits for them (at most
  ``stop_timeout_s``, then SIGKILL) and exits 0 when all exited with 0.
- A child that exits on its own (a crash) stops the group: the others get SIGTERM and the
  supervisor exits with that child's status (128 + S when killed by signal S; 1 if it
  was 0, since a worker is not meant to end unasked). The group fails as one, so systemd or
  Kubernetes restarts all of it, rather than the survivors carrying on with fewer
  processes (and cores) than asked for and nobody told. Nothing is lost either way: every
  worker recovers its state from Kafka and rewrites rows, never adds them.
- A supervisor that is itself killed (SIGKILL, OOM killer) takes the children along:
  on Linux each is started with the parent-death signal SIGKILL (``prctl``), the same end
  as a SIGKILL of a single worker, which the worker is built to survive. Each worker's
  ClickHouse writer child follows its worker (``streams.clickhouse.process``).

The supervisor imports neither Faust nor a ClickHouse driver: it only holds processes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from streams.errors import ConfigError
from streams.settings import Settings

log = logging.getLogger(__name__)

#: How long the children may take to stop (flush, commit, leave the group) before SIGKILL.
STOP_TIMEOUT_S = 60.0
#: Longest pause between two looks at signals and at the children.
POLL_S = 0.2
#: How long output left in the pipes is still copied once every child has exited (a
#: ClickHouse writer child of a worker may hold a pipe open for a moment longer).
DRAIN_S = 2.0
#: A line longer than this is copied in pieces rather than held until its end.
MAX_LINE = 1 << 20
#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def check_process_count(settings: Settings, processes: int) -> None:
    """ConfigError when ``--processes`` cannot work with these settings.

    More processes than ``JOURNEY_PARTITIONS`` would sit idle (a partition has one
    consumer in a group); embedded chdb opens its folder from one process only.
    """
    if processes < 1:
        raise ConfigError(f"--processes {processes}: run at least 1 worker process")
    if processes == 1:
        return
    if not settings.clickhouse_url:
        raise ConfigError(
            f"--processes {processes} needs a ClickHouse server: set JOURNEY_CLICKHOUSE_URL "
            "(the embedded chdb default can be opened by one process only)"
        )
    if processes > settings.partitions:
        raise ConfigError(
            f"--processes {processes} is more than JOURNEY_PARTITIONS={settings.partitions}: "
            "the extra processes would get no partition and idle; run at most "
            f"{settings.partitions} or raise JOURNEY_PARTITIONS"
        )
    last_port = settings.metrics_port + processes - 1
    if last_port > 65535:
        raise ConfigError(
            f"--processes {processes} needs metrics ports JOURNEY_METRICS_PORT="
            f"{settings.metrics_port} to {last_port}; lower JOURNEY_METRICS_PORT"
        )


def instance_environment(
    parent: Mapping[str, str], settings: Settings, instance: int
) -> dict[str, str]:
    """The environment of worker ``instance`` (0-based): ``parent`` but its own folder and port.

    Each Faust worker keeps files in its data folder that no other may share; each serves
    ``/metrics`` on a port of its own, the base port plus ``instance``.
    """
    env = dict(parent)
    env["JOURNEY_DATA_DIR"] = str(Path(settings.data_dir) / f"worker-{instance}")
    env["JOURNEY_METRICS_PORT"] = str(settings.metrics_port + instance)
    return env


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: killed by signal S is 128 + S."""
    return 128 - returncode if returncode < 0 else returncode


def _die_with_supervisor() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux SIGKILL the child when the supervisor dies; else None.

    libc is loaded here, before the fork: the child only makes the call. Should the
    supervisor have died between the fork and the call, the child is orphaned already and
    exits at once. Linux sends the signal when the *thread* that forked the child ends, so
    the children are started from the supervisor's main thread, which ends last.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    supervisor = os.getpid()

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        if os.getppid() != supervisor:
            os._exit(1)

    return arm


@dataclass
class _Pipe:
    """One output pipe of a child, copied line by line to ``target`` after ``prefix``."""

    source: IO[bytes]
    prefix: bytes
    target: IO[bytes]
    pending: bytes = b""

    def feed(self, chunk: bytes) -> None:
        """Copy every complete line of what arrived so far; all of it once ``chunk`` is empty.

        An empty ``chunk`` means end of file. A line longer than MAX_LINE is copied in
        pieces rather than held until its end.
        """
        data = self.pending + chunk
        if chunk and len(data) < MAX_LINE:
            cut = data.rfind(b"\n") + 1  # 0: no complete line yet
            data, self.pending = data[:cut], data[cut:]
        else:
            self.pending = b""
            if data and not data.endswith(b"\n"):
                data += b"\n"
        if data:
            lines = data[:-1].split(b"\n")
            self.target.write(b"".join(self.prefix + line + b"\n" for line in lines))
            self.target.flush()


@dataclass
class _Child:
    """One worker process of the group."""

    name: str
    process: subprocess.Popen[bytes]


class WorkerSupervisor:
    """Starts worker processes, copies their output, and stops them together (see module)."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        environments: Sequence[Mapping[str, str]],
        *,
        stdout: IO[bytes],
        stderr: IO[bytes],
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        """One child per command, started with the environment at the same index.

        Their stdout and stderr are copied to ``stdout`` and ``stderr``, each line after
        ``worker-I:``.
        """
        if len(commands) != len(environments):
            raise ValueError("one environment per command")
        self._commands = [list(command) for command in commands]
        self._environments = [dict(env) for env in environments]
        self._stdout = stdout
        self._stderr = stderr
        self._stop_timeout_s = stop_timeout_s
        self._children: list[_Child] = []
        self._selector = selectors.DefaultSelector()
        self._signal: int | None = None

    def run(self) -> int:
        """Start every child and watch them until a stop signal or a child's exit (see module).

        Returns the exit status of the group. Whatever happens, no child is left running.
        """
        stop_signals = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in stop_signals}
        try:
            preexec = _die_with_supervisor()
            for command, env in zip(self._commands, self._environments, strict=True):
                self._start(command, env, preexec)
            log.info(
                "started %d worker processes: %s",
                len(self._children),
                ", ".join(f"{c.name} pid {c.process.pid}" for c in self._children),
            )
            return self._watch()
        finally:
            self._stop(signal.SIGTERM)  # nothing to do unless an error cut the watch short
            self._selector.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only noted here; the watch loop acts on it within POLL_S. A second signal while
        # the group stops changes nothing: the stop is bounded by stop_timeout_s anyway.
        if self._signal is None:
            self._signal = signum

    def _start(
        self, command: list[str], env: dict[str, str], preexec: Callable[[], None] | None
    ) -> None:
        name = f"worker-{len(self._children)}"
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C in a terminal reaches the supervisor alone, which
            # forwards it once; the SIGKILL of a stop takes the child's writer process along.
            start_new_session=True,
            preexec_fn=preexec,
        )
        self._children.append(_Child(name, process))
        prefix = f"{name}: ".encode()
        for stream, target in ((process.stdout, self._stdout), (process.stderr, self._stderr)):
            assert stream is not None
            self._selector.register(stream, selectors.EVENT_READ, _Pipe(stream, prefix, target))

    def _watch(self) -> int:
        """Copy output until a stop signal arrives or a child exits; then stop the group."""
        while True:
            self._copy_output(POLL_S)
            if self._signal is not None:
                log.info(
                    "%s: stopping %d worker processes",
                    signal.Signals(self._signal).name,
                    len(self._children),
                )
                return self._stop(self._signal)
            for child in self._children:
                code = child.process.poll()
                if code is not None:
                    log.error(
                        "%s (pid %d) exited with status %d; stopping the other worker "
                        "processes so that the group is restarted whole",
                        child.name, child.process.pid, exit_status(code),
                    )  # fmt: skip
                    self._stop(signal.SIGTERM)
                    return exit_status(code) or 1

    def _stop(self, signum: int) -> int:
        """Send ``signum`` to every running child, wait (bounded), SIGKILL what is left.

        Returns 0 when every child exited with 0, else the first other status.
        """
        running = [child for child in self._children if child.process.poll() is None]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signum)
        deadline = time.monotonic() + self._stop_timeout_s
        while time.monotonic() < deadline and any(c.process.poll() is None for c in running):
            self._copy_output(POLL_S)  # a child blocked on a full pipe could not exit
        for child in running:
            if child.process.poll() is None:
                log.warning(
                    "%s (pid %d) did not stop within %.0f s: SIGKILL",
                    child.name, child.process.pid, self._stop_timeout_s,
                )  # fmt: skip
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.process.pid, signal.SIGKILL)
                child.process.wait()
        self._drain()
        statuses = [exit_status(child.process.returncode) for child in self._children]
        return next((status for status in statuses if status), 0)

    def _copy_output(self, timeout_s: float) -> None:
        """Copy what the children wrote; wait up to ``timeout_s`` for something to arrive."""
        if not self._selector.get_map():
            time.sleep(timeout_s)
            return
        for key, _ in self._selector.select(timeout_s):
            pipe: _Pipe = key.data
            chunk = os.read(key.fd, 65536)
            pipe.feed(chunk)
            if not chunk:
                self._close(pipe)

    def _drain(self) -> None:
        """Copy what is left in the pipes of exited children, for at most DRAIN_S."""
        deadline = time.monotonic() + DRAIN_S
        while self._selector.get_map() and time.monotonic() < deadline:
            self._copy_output(POLL_S)
        for key in list(self._selector.get_map().values()):
            pipe: _Pipe = key.data
            pipe.feed(b"")
            self._close(pipe)

    def _close(self, pipe: _Pipe) -> None:
        self._selector.unregister(pipe.source)
        pipe.source.close()


def run_group(settings: Settings, processes: int, loglevel: str, environ: Mapping[str, str]) -> int:
    """Run ``processes`` workers of these settings under a :class:`WorkerSupervisor`.

    The count is checked already (:func:`check_process_count`). ``environ`` is the
    command's environment, which the children inherit but for their data folder and
    metrics port.
    """
    command = [sys.executable, "-m", "streams.cli", "worker", "--loglevel", loglevel]
    supervisor = WorkerSupervisor(
        [command] * processes,
        [instance_environment(environ, settings, i) for i in range(processes)],
        stdout=sys.stdout.buffer,
        stderr=sys.stderr.buffer,
    )
    return supervisor.run()
