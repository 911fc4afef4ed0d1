"""Where the worker's time goes: py-spy samples of the running worker, aggregated.

``py-spy record -f raw`` writes one line per distinct stack, ``frame;frame;... COUNT``
(outermost first), each frame ``function (file:line)``. The summary counts, per function,
the samples where it is on top of the stack (self time) and where it is anywhere on it
(inclusive time), as shares of all samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

from streams.bench.processes import ManagedProcess

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    """The py-spy executable next to this Python (the venv) or on PATH, if any."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def _short(frame: str) -> str:
    """``function (file:line)`` as ``module/file.py:function`` without site-packages paths."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/streams/", "lib/python3"):
        at = path.find(marker)
        if at >= 0:
            path = path[at + len(marker) :] if marker != "/streams/" else path[at + 1 :]
            break
    return f"{path}:{match.group('func')}"


def summarize(raw: str, top: int = 15) -> list[str]:
    """Lines ``self% inclusive% function`` of the ``top`` functions by self time."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return []
    lines = [f"{total} samples; self% / inclusive% / function"]
    for name, count in own.most_common(top):
        lines.append(f"{100 * count / total:5.1f} {100 * inclusive[name] / total:5.1f}  {name}")
    lines.append("top inclusive (streams/ only):")
    ours = [(n, c) for n, c in inclusive.most_common() if n.startswith("streams/")]
    for name, count in ours[:top]:
        lines.append(f"      {100 * count / total:5.1f}  {name}")
    return lines


class ProfileRecorder:
    """``py-spy record`` attached to a process until :meth:`finish`; nothing if py-spy is absent."""

    def __init__(self, pid: int, out: Path, max_seconds: int = 600) -> None:
        """Start sampling ``pid`` (100 Hz) into ``out`` (raw format)."""
        self.out = out
        exe = py_spy()
        self._process: ManagedProcess | None = None
        if exe is None:
            return
        self._process = ManagedProcess(
            [exe, "record", "-p", str(pid), "-d", str(max_seconds), "-f", "raw", "-o", str(out)],
            {"PATH": "/usr/bin:/bin"},
            out.with_suffix(".log"),
        )

    def finish(self) -> list[str]:
        """Stop sampling (py-spy writes its file on SIGINT/SIGTERM) and summarise it."""
        self.stop()
        try:
            return summarize(self.out.read_text())
        except OSError:
            return []

    def stop(self) -> None:
        """Stop py-spy; idempotent."""
        if self._process is not None:
            # py-spy writes its output when interrupted (Ctrl-C), not when terminated.
            self._process.stop(grace_s=30, first=signal.SIGINT)
