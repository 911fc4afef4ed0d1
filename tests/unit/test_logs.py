"""Client libraries' repeated log records: the first at once, then one a window with a count."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from streams.logs import CLIENT_LOGGERS, RepeatFilter, collapse_client_logs


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(
    msg: str, *args: object, name: str = "aiokafka.conn", level: int = logging.ERROR
) -> logging.LogRecord:
    """A log record as a library's ``log.error(msg, *args)`` makes it."""
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_the_first_record_of_a_kind_passes_and_repeats_are_counted() -> None:
    """Within the window repeats are held back; the next one after it says how many."""
    clock = Clock()
    repeats = RepeatFilter(window_s=60.0, clock=clock)
    template = "Unable connect to node with id %s: %s"
    assert repeats.filter(record(template, 1, "refused"))
    for _ in range(250):
        clock.now += 0.1
        assert not repeats.filter(record(template, 1, "refused"))
    clock.now = 1060.0
    after = record(template, 1, "refused")
    assert repeats.filter(after)
    assert after.getMessage() == (
        "Unable connect to node with id 1: refused [and 250 more like it in the previous 60 s]"
    )


def test_kinds_are_told_apart_by_logger_level_and_template() -> None:
    """Another template, logger or level passes; numbers in formatted text do not count."""
    repeats = RepeatFilter(window_s=60.0, clock=Clock())
    assert repeats.filter(record("Failed fetch messages from 1"))
    assert not repeats.filter(record("Failed fetch messages from 2"))
    assert repeats.filter(record("Failed fetch messages from 1", level=logging.WARNING))
    assert repeats.filter(record("Failed fetch messages from 1", name="kafka.conn"))
    assert repeats.filter(record("Heartbeat failed for group %s", "g"))


def test_a_kind_seen_again_after_a_quiet_window_passes_without_a_count() -> None:
    """Nothing held back: the record is let through unchanged."""
    clock = Clock()
    repeats = RepeatFilter(window_s=60.0, clock=clock)
    assert repeats.filter(record("Marking the coordinator dead"))
    clock.now += 61
    again = record("Marking the coordinator dead")
    assert repeats.filter(again)
    assert again.getMessage() == "Marking the coordinator dead"


@pytest.fixture
def restored_loggers() -> Iterator[None]:
    """Put the client loggers back as they were (collapse_client_logs changes them)."""
    saved = {
        n: (logging.getLogger(n).propagate, list(logging.getLogger(n).handlers))
        for n in CLIENT_LOGGERS
    }
    yield
    for name, (propagate, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.propagate, logger.handlers = propagate, handlers


class Collect(logging.Handler):
    """The root handler of the test: keeps the messages it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.usefixtures("restored_loggers")
def test_module_loggers_of_every_library_reach_the_root_handlers_collapsed() -> None:
    """A library module's logger (a child) goes through the filter to the root's handlers."""
    collapse_client_logs()
    collapse_client_logs()  # idempotent: one route, one filter
    root = logging.getLogger()
    collect = Collect()
    root.addHandler(collect)
    try:
        for name in ("aiokafka.consumer.fetcher", "kafka.client", "faust.transport", "mode.worker"):
            for _ in range(100):
                logging.getLogger(name).error("Failed fetch messages from %s", 1)
        logging.getLogger("streams.worker.app").error("ours %s", 1)
        logging.getLogger("streams.worker.app").error("ours %s", 1)
    finally:
        root.removeHandler(collect)
    assert collect.messages == ["Failed fetch messages from 1"] * 4 + ["ours 1", "ours 1"]
