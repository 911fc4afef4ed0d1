"""The visitors table's recovery leaves corrupt changelog records out and reports them."""

from __future__ import annotations

import types

import faust

from streams.engine.events import Event
from streams.engine.stages import StageRules
from streams.engine.state import Corrupt
from streams.settings import Settings
from streams.worker.changelog import ScreenedTable, screen
from streams.worker.codec import Forwarded
from streams.worker.flusher import watermark_key
from streams.worker.partition import WATERMARK_KEY, PartitionState
from streams.worker.partitioning import partition_for_key

PARTITIONS = 4
T0 = 1_700_000_000_000


def _checkpointed(partition: int) -> tuple[bytes, dict[bytes, bytes]]:
    """(own record, visitor records) of a partition that applied one message."""
    config = Settings().session_config()
    state = PartitionState(partition, config, StageRules.default())
    keys = [f"visitor-{n}" for n in range(40)]
    mine = [k for k in keys if partition_for_key(k.encode(), PARTITIONS) == partition][:3]
    events = [Event(f"e-{k}", "page_view", T0, k, anonymous_id=k) for k in mine]
    state.apply(Forwarded(events, [(0, n, 0) for n in range(len(events))]), 0, now_ms=0)
    own = b""
    visitors: dict[bytes, bytes] = {}
    for key, value in state.checkpoint().writes:
        assert value is not None
        if key == WATERMARK_KEY:
            own = value
        else:
            visitors[key] = value
    return own, visitors


def test_good_records_and_deletions_pass_corrupt_ones_are_named() -> None:
    """Visitor and partition records that decode pass; every kind of corrupt one is caught."""
    own, visitors = _checkpointed(1)
    (key, value), *_ = visitors.items()
    other = next(k for k in (f"x{n}".encode() for n in range(50))
                 if partition_for_key(k, PARTITIONS) != 1)  # fmt: skip
    records: list[tuple[int, bytes | None, bytes | None]] = [
        (1, key, value),
        (1, watermark_key(1), own),
        (1, key, None),  # a deletion
        (1, key, value[:8] + b"\x03garbage"),  # truncated msgpack
        (1, key, value[:5]),  # shorter than the applied offset
        (1, key, b""),
        (1, None, value),  # no key
        (1, b"\xff\xfe", value),  # not UTF-8
        (1, other, value),  # a visitor of another partition
        (1, watermark_key(2), own),  # another partition's record
        (1, b"\x00garbage", own),
        (1, watermark_key(1), own[:16] + b'{"n": []}'),  # wrong JSON shape
    ]
    verdicts = screen(records, PARTITIONS)
    assert verdicts[:3] == [None, None, None]
    for record, verdict in zip(records[3:], verdicts[3:], strict=True):
        assert isinstance(verdict, Corrupt), record
        assert verdict.detail


def _event(partition: int, offset: int, key: bytes | None, value: bytes | None) -> object:
    message = types.SimpleNamespace(
        topic="app-visitors-changelog", partition=partition, offset=offset, key=key, value=value
    )
    return types.SimpleNamespace(key=key, value=value, message=message)


def test_recovery_keeps_the_last_valid_record_and_reports_the_corrupt_ones() -> None:
    """A corrupt record is as if never written: the earlier value stays; it is reported."""
    app = faust.App("changelog-test", store="memory://")
    table = ScreenedTable(
        app, name="visitors", beacon=app.tables.beacon, partitions=PARTITIONS, default=None,
        key_type=bytes, value_type=bytes,
    )  # fmt: skip
    _, visitors = _checkpointed(2)
    (key, value), (second, second_value) = list(visitors.items())[:2]
    table.apply_changelog_batch([_event(2, 0, key, value), _event(2, 1, second, second_value)])
    table.apply_changelog_batch(
        [
            _event(2, 2, key, b"\x04\xff\xff\xff\xff" + b"\x00" * 8),  # an lz4 bomb
            _event(2, 3, watermark_key(2), b"{not a record"),
            _event(2, 4, second, None),
        ]
    )
    store = table.data.data
    assert store[key] == value  # the corrupt record left it as the worker last wrote it
    assert watermark_key(2) not in store
    assert second not in store  # the deletion after it still applies
    rejected = table.take_rejected()
    assert [(r.kind, r.topic, r.partition, r.offset, r.key) for r in rejected] == [
        ("changelog", "app-visitors-changelog", 2, 2, key),
        ("changelog", "app-visitors-changelog", 2, 3, watermark_key(2)),
    ]
    assert table.take_rejected() == []
