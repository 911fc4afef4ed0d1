"""Checkpoint encoding in a forked child: the states are encoded beside the worker, not in it.

With live traffic a checkpoint encodes about one visitor state per two events (150,000 of
them at 20,000 events/s and a checkpoint every 12.5 s), and in the worker's process that
cost a sixth of its CPU, paced or not (BENCHMARKS.md, "seventh step"). ``fork`` gives a
copy of the process as it is at the take, for free until either side writes to a page
(copy on write): the child encodes every pending state of that copy on the other core and
writes the records to an anonymous file, while the worker goes on changing its own
states. The worker then reads the records back (a slice of bytes each) and finishes the
checkpoint as if it had encoded them itself: the records are those of the states at the
take, exactly what ``PendingCheckpoint`` would have encoded.

The child runs only our own encoding code (msgspec, lz4) and ``os.write``: it touches no
lock another thread may hold (the ClickHouse writer thread, the metrics server), no
socket and no event loop, and leaves with ``os._exit``. It ignores SIGINT (an operator's
Ctrl-C is for the worker to handle) and turns the garbage collector off (a collection
would walk, and so copy, every tracked object).

The file holds, for every pending visitor of every checkpoint in order, a 4-byte
big-endian length and the record.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import signal
import struct
import sys
import tempfile
import traceback
from collections.abc import Iterator

from streams.errors import StreamError
from streams.worker.partition import PendingCheckpoint

_LENGTH = struct.Struct(">I")
#: Bytes the child buffers before a write, and the worker reads at a time.
CHUNK = 4 << 20
#: How often the worker looks whether the child is done (its encoding takes 0.1-2 s).
POLL_S = 0.02


def fork_available() -> bool:
    """True where checkpoints can be encoded in a forked child (POSIX)."""
    return hasattr(os, "fork")


class ForkedEncoding:
    """The encoding of some pending checkpoints, under way in a forked child.

    Made at the take (``PartitionState.begin_checkpoint(frozen=True)``), before the
    worker changes any state again; :meth:`install` waits for the child and hands each
    checkpoint its records.
    """

    def __init__(self, checkpoints: list[PendingCheckpoint]) -> None:
        """Fork a child that encodes every pending visitor of ``checkpoints``."""
        self._checkpoints = checkpoints
        self._file = _scratch_file()
        self._pid = os.fork()
        if self._pid == 0:  # pragma: no cover - the child: its coverage is never written
            _encode_and_exit(self._file, checkpoints)

    async def install(self) -> None:
        """Wait for the child, then give every checkpoint the records it encoded.

        Raises ``StreamError`` if the child failed (it printed why) or wrote too little.
        """
        try:
            status = await self._wait()
            if status != 0:
                raise StreamError(f"the checkpoint encoder exited with status {status}")
            records = _read_records(self._file)
            for pending in self._checkpoints:
                wanted = len(pending.pending)
                values = list(itertools.islice(records, wanted))
                if len(values) != wanted:
                    raise StreamError("the checkpoint encoder wrote fewer records than pending")
                pending.install(values)
            if next(records, None) is not None:
                raise StreamError("the checkpoint encoder wrote more records than pending")
        finally:
            os.close(self._file)

    async def _wait(self) -> int:
        while True:
            pid, status = os.waitpid(self._pid, os.WNOHANG)  # noqa: ASYNC222 (never blocks)
            if pid:
                return os.waitstatus_to_exitcode(status)
            await asyncio.sleep(POLL_S)


def _scratch_file() -> int:
    """A file descriptor of an anonymous file in memory (a deleted temporary file elsewhere)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("journey-checkpoint", os.MFD_CLOEXEC)
    handle, path = tempfile.mkstemp(prefix="journey-checkpoint-")
    os.unlink(path)
    return handle


def _encode_and_exit(fd: int, checkpoints: list[PendingCheckpoint]) -> None:  # pragma: no cover
    """The child: encode, write, leave without running any of the worker's clean-up."""
    code = 1
    try:
        gc.disable()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        buffer = bytearray()
        for pending in checkpoints:
            for record in pending.encode_frozen():
                buffer += _LENGTH.pack(len(record))
                buffer += record
                if len(buffer) >= CHUNK:
                    _write_all(fd, buffer)
                    buffer.clear()
        _write_all(fd, buffer)
        code = 0
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
    finally:
        os._exit(code)


def _write_all(fd: int, data: bytearray) -> None:  # pragma: no cover - runs in the child
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_records(fd: int) -> Iterator[bytes]:
    """The records in the file, in order, read a chunk at a time."""
    os.lseek(fd, 0, os.SEEK_SET)
    carry = b""
    while chunk := os.read(fd, CHUNK):
        data = carry + chunk if carry else chunk
        at, end = 0, len(data)
        while at + _LENGTH.size <= end:
            (size,) = _LENGTH.unpack_from(data, at)
            stop = at + _LENGTH.size + size
            if stop > end:
                break
            yield data[at + _LENGTH.size : stop]
            at = stop
        carry = data[at:]
    if carry:
        raise StreamError("the checkpoint encoder's file ends inside a record")
