"""What the client libraries log: the first message of each kind at once, then a count.

aiokafka, kafka-python, Faust and mode log every failed attempt of a retry loop. A worker
that loses its broker wrote about 250 lines a second (measured: "Unable connect to node",
"Unable to update metadata", "NodeNotReadyError", each repeated thousands of times), which
buries what happened and when it ended. :func:`collapse_client_logs` routes the libraries'
records through :class:`RepeatFilter`: the first record of a kind passes, the same kind
again within the window is counted, and the first one after the window says how many
were held back. Nothing is lost from view for longer than the window, so a worker that
loses Kafka later still says so, and keeps saying so once a minute.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Top-level loggers of the client libraries (every module logger is a child of one).
CLIENT_LOGGERS = ("aiokafka", "kafka", "faust", "mode", "clickhouse_driver")
#: Seconds during which records of one kind after the first are only counted.
REPEAT_WINDOW_S = 60.0
#: Kinds remembered at most; beyond it, kinds not seen for a window are forgotten.
MAX_KINDS = 512

_DIGITS = re.compile(r"\d+")


@dataclass(slots=True)
class _Kind:
    since: float
    held: int = 0


class RepeatFilter(logging.Filter):
    """Pass the first record of each kind, then at most one per window with a count.

    A kind is the logger, the level and the message template with its numbers blanked
    (libraries that format before logging put node ids, ports and offsets in the text).
    """

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Count repeats for ``window_s`` seconds of ``clock`` after each record let through."""
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._kinds: dict[tuple[str, int, str], _Kind] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True to emit ``record`` (its message then mentions what was held back)."""
        key = (record.name, record.levelno, _DIGITS.sub("#", str(record.msg)))
        now = self._clock()
        kind = self._kinds.get(key)
        if kind is not None and now - kind.since < self.window_s:
            kind.held += 1
            return False
        if kind is not None and kind.held:
            record.msg = (
                f"{record.msg} [and {kind.held} more like it in the previous "
                f"{now - kind.since:.0f} s]"
            )
        if kind is None and len(self._kinds) >= MAX_KINDS:
            self._forget(now)
        self._kinds[key] = _Kind(since=now)
        return True

    def _forget(self, now: float) -> None:
        stale = [key for key, kind in self._kinds.items() if now - kind.since >= self.window_s]
        for key in stale or list(self._kinds):
            del self._kinds[key]


class _ToRoot(logging.Handler):
    """Hands each record that passes its filters to the root logger's handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


def collapse_client_logs(window_s: float = REPEAT_WINDOW_S) -> None:
    """Route the client libraries' records through one :class:`RepeatFilter`; idempotent.

    Each library's top-level logger stops propagating and gets a handler that filters,
    then passes the record to the root logger's handlers, whatever configures them later
    (``logging.basicConfig``, or mode's set-up when the Faust worker starts).
    """
    repeats = RepeatFilter(window_s)
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if any(isinstance(handler, _ToRoot) for handler in logger.handlers):
            continue
        handler = _ToRoot()
        handler.addFilter(repeats)
        logger.addHandler(handler)
        logger.propagate = False
