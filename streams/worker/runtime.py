"""What the parts of one worker process share, and the way it stops when it must not go on.

The sessionize agent, the tick timer, the intake's direct apply and the rebalance and
shutdown handlers run as separate tasks over the same partition states; the direct
intake, the flusher, the partition loader and the repair of skipped messages are the
classes they call. ``WorkerRuntime`` is the little they all see: the states, the lock every
task holds while it reads or changes them, and the worker's phase.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from streams.worker.partition import PartitionState

log = logging.getLogger(__name__)

#: Exit status when Kafka did not take the worker's output or skipped input cannot be read.
EXIT_OUTPUT_LOST = 75

#: glibc's ``malloc_trim``; other C libraries (macOS, musl) have none and need none of this.
_MALLOC_TRIM: Callable[[int], int] | None
try:
    _MALLOC_TRIM = ctypes.CDLL(None).malloc_trim
except (AttributeError, OSError):  # pragma: no cover - not glibc
    _MALLOC_TRIM = None


@dataclass(slots=True)
class WorkerRuntime:
    """Mutable state shared by the agents, timers and classes of one worker process."""

    #: By-visitor partition -> its state, for the partitions assigned and loaded here.
    partitions: dict[int, PartitionState] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Wall time (ms) the last flush or repair ended: the agent may have waited for it.
    resumed_ms: int = 0
    #: Set when a revocation waits for the lock: a long repair stops for it
    #: (see ``SkippedMessages.repair``).
    revoking: bool = False
    stopping: bool = False
    #: True between the table's recovery for an assignment and the next revocation.
    recovered: bool = False


def exit_unrecoverable(what: str) -> NoReturn:
    """Stop the way a crash does: continuing would lose events (see ``Flusher.flush``)."""
    log.critical("%s; exiting without acknowledging input", what, exc_info=True)
    logging.shutdown()
    os._exit(EXIT_OUTPUT_LOST)


def release_free_memory() -> None:
    """Give the memory the C allocator holds free back to the system (glibc ``malloc_trim``).

    Called after each checkpoint. Between a checkpoint's take and its end the worker holds
    that checkpoint's output (the records of a Kafka transaction, the rows being written);
    once freed, glibc keeps most of it in its heap, where it counts in the process's RSS
    for good. A burst of a million new visitors held 1,702 B per open session so with
    exactly-once output, 1,390 B at least once, and 1,252-1,324 B trimmed after each checkpoint
    (BENCHMARKS.md). A trim of a 1-2 GB heap takes 10-30 ms, once per checkpoint.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
