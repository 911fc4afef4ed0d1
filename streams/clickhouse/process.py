"""ClickHouse writes in a process of their own, so that they do not hold the worker's GIL.

The worker applies events on one core: its event loop and every thread it starts share one
interpreter lock. Serialising a flush's rows for the native protocol (or for chdb) is
mostly work done holding that lock, and with live traffic a flush carries about one
session row per event: profiled at 18,000 events/s, the write thread held it a tenth of
the time, time the intake then waited for. :class:`WriterProcess` does the same
:class:`~streams.clickhouse.writer.ClickHouseWriter` work in a child process: the worker
passes each batch over a pipe as msgpack (msgspec encodes the row structs in about 0.65 us
a row, against 1.5 us to pickle them as tuples and about 7 us to write them) and waits for
the answer, releasing the lock meanwhile.

The child opens the target (a server's address or an embedded folder) and applies the
migrations before it answers ``ready``, so the worker never opens an embedded folder
itself: chdb allows one process per folder. Failures come back as they would from the
writer: :class:`~streams.errors.StorageError` for ClickHouse refusing or unreachable,
anything else as a :class:`RuntimeError` carrying the child's traceback. A child that dies
is started again at the next write, which first fails with a ``StorageError`` (the sink's
retry then writes the batch again). The child exits when the worker closes the pipe, or
dies, however it dies (it reads end-of-file).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Collection, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from streams.clickhouse.backend import target_name
from streams.engine.rows import OrderRow, SessionRow
from streams.errors import StorageError

if TYPE_CHECKING:
    from streams.clickhouse.address import ServerAddress

log = logging.getLogger(__name__)

#: A write's arguments on the pipe: session rows, removed ids, order rows, removed starts,
#: whether to defer the rollup refresh, minutes to refresh as well.
_Batch = tuple[list[SessionRow], list[str], list[OrderRow], dict[str, int], bool, list[int]]
_encode_batch = msgspec.msgpack.Encoder().encode
_decode_batch = msgspec.msgpack.Decoder(_Batch).decode

#: How long the child may take to open ClickHouse and apply the migrations.
START_TIMEOUT_S = 120.0


def _exit_with_parent() -> None:
    """Exit the moment the worker dies, even in the middle of a write.

    An orphan writing on would be a second writer next to the worker restarted after a
    crash: its rollup refresh, computed from an older read, could land with a newer
    version. So the child ends as the worker did, mid-write or not (a SIGKILL of the
    worker leaves ClickHouse as it left it before this process existed).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(0)

    threading.Thread(target=watch, name="journey-parent-watch", daemon=True).start()


class AfterWrite(Protocol):
    """Work the child does with a batch's session rows once ClickHouse has them.

    Picklable (it travels to the child before :meth:`start`); the worker publishes the
    rows to its sessions topic this way (``streams.worker.output.SessionsPublisher``).
    Whatever it raises reaches the worker as a RuntimeError.
    """

    def start(self) -> None:
        """Open what it needs, in the child."""

    def __call__(self, sessions: list[SessionRow]) -> None:
        """Handle the session rows of a batch just written."""


def _serve(
    conn: Connection,
    target: str | ServerAddress,
    after: AfterWrite | None,
    retention_days: int | None,
) -> None:
    """The child: open ``target``, migrate, then write every batch received until EOF.

    With a retention, the rows older than it are deleted at start and every
    ``DELETE_EVERY_S`` between batches where the backend has no TTLs.
    """
    _exit_with_parent()
    from streams.clickhouse.backend import open_backend
    from streams.clickhouse.migrations import apply_migrations
    from streams.clickhouse.retention import DELETE_EVERY_S, apply_retention
    from streams.clickhouse.writer import ClickHouseWriter

    try:
        backend = open_backend(target)
        apply_migrations(backend)
        enforced = apply_retention(backend, retention_days)
        enforced_at = time.monotonic()
        if after is not None:
            after.start()
    except StorageError as exc:
        conn.send(("storage", str(exc)))
        return
    except Exception:
        conn.send(("fatal", traceback.format_exc()))
        return
    writer = ClickHouseWriter(backend)
    conn.send(("ready", backend.name))
    try:
        while True:
            try:
                raw = conn.recv_bytes()
            except EOFError:
                return
            rows, removed, orders, starts, defer, also = _decode_batch(raw)
            try:
                if enforced == "delete" and time.monotonic() - enforced_at >= DELETE_EVERY_S:
                    apply_retention(backend, retention_days)
                    enforced_at = time.monotonic()
                minutes = writer.write(
                    rows, removed, orders, starts, defer_rollups=defer, also_refresh=also
                )
                if after is not None:
                    after(rows)
            except StorageError as exc:
                answer: tuple[str, Any] = ("storage", str(exc))
            except Exception:
                answer = ("fatal", traceback.format_exc())
            else:
                answer = ("ok", minutes)
            try:
                conn.send(answer)
            except OSError:
                return  # the worker closed the pipe
    finally:
        backend.close()


class WriterProcess:
    """A :class:`~streams.sink.RowWriter` whose writes run in a child process (see module)."""

    def __init__(
        self,
        target: str | ServerAddress,
        after: AfterWrite | None = None,
        retention_days: int | None = None,
    ) -> None:
        """Start the child for ``target`` and wait until it is ready; StorageError if not.

        ``target`` is an embedded folder or a server's address (its password reaches the
        child through the pipe, not its command line).

        ``after`` runs in the child with each batch's session rows once they are written;
        a write returns only when it is done too. ``retention_days``: see
        :mod:`streams.clickhouse.retention` (None keeps rows for ever).
        """
        self.target = target
        self.after = after
        self.retention_days = retention_days
        self.name = ""
        self._context = multiprocessing.get_context("spawn")
        self._conn: Connection | None = None
        self._process: Any = None
        self._lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_serve,
            args=(child, self.target, self.after, self.retention_days),
            name="journey-clickhouse",
            daemon=True,
        )
        process.start()
        child.close()
        self._conn, self._process = parent, process
        if not parent.poll(START_TIMEOUT_S):
            self._stop()
            raise StorageError(
                f"the ClickHouse writer process did not open {target_name(self.target)} "
                f"within {START_TIMEOUT_S:.0f} s"
            )
        try:
            self.name = self._answer()
        except BaseException:
            self._stop()
            raise

    def _answer(self) -> Any:
        """The child's answer to the last request; raises what it reported."""
        assert self._conn is not None
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            raise self._exited() from None
        if kind == "storage":
            raise StorageError(value)
        if kind == "fatal":
            raise RuntimeError(f"the ClickHouse writer process failed:\n{value}")
        return value

    def write(
        self,
        sessions: Sequence[SessionRow],
        removed_session_ids: Sequence[str] = (),
        orders: Sequence[OrderRow] = (),
        removed_starts: Mapping[str, int] | None = None,
        *,
        defer_rollups: bool = False,
        also_refresh: Collection[int] = (),
    ) -> set[int]:
        """:meth:`ClickHouseWriter.write` in the child; blocks (without the GIL) until done."""
        payload = _encode_batch(
            (
                list(sessions),
                list(removed_session_ids),
                list(orders),
                dict(removed_starts or {}),
                defer_rollups,
                sorted(also_refresh),
            )
        )
        with self._lock:
            if self._conn is None:
                self._start()
            assert self._conn is not None
            try:
                self._conn.send_bytes(payload)
            except OSError:
                raise self._exited() from None
            minutes: set[int] = self._answer()
            return minutes

    def _exited(self) -> StorageError:
        """The child is gone: forget it (the next write starts another); the error to raise."""
        self._stop()
        return StorageError(
            "the ClickHouse writer process exited; it is started again at the next write"
        )

    def _stop(self) -> None:
        conn, process, self._conn, self._process = self._conn, self._process, None, None
        if conn is not None:
            conn.close()
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)

    def close(self) -> None:
        """Close the pipe; the child finishes what it was doing and exits."""
        with self._lock:
            self._stop()
