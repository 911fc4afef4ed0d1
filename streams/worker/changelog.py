"""The visitors table's changelog, screened as Faust recovers it: corrupt records stay out.

The table's store is rebuilt from its changelog at start-up and after every rebalance, and
its records are decoded later (a visitor's when its next event comes, a partition's record
when the partition is loaded). A record anyone wrote there that cannot be decoded would
then stop the worker, at every start. So each record is decoded once as it is recovered
(:func:`screen`); one that fails is kept out of the store, remembered with its topic,
partition and offset, and counted and dead-lettered by the worker once the table is
recovered (``ScreenedTable.take_rejected``).

What a corrupt record means for the state: it is ignored as if never written. Its key
keeps the value of the last valid record before it in the changelog (the state the
worker itself last checkpointed, while compaction has not removed it), else it has none:

* a visitor without a record starts empty, as a new visitor: applied offset -1, so every
  message not yet acknowledged is applied to it again, and its earlier sessions are
  unknown to it (their rows stay in ClickHouse as written);
* a partition without its own record is taken as never checkpointed: it expects its
  messages from the start of the by-visitor log and reads the ones its consumer group
  already committed itself (``GapFetcher``); visitors whose records hold a message skip
  it, so nothing is counted twice.

Records that are screened: the key must be a visitor key (UTF-8, of the partition its
hash gives, as the worker writes it), a customer's (``CUSTOMER_PREFIX`` and a customer key
of the partition its hash gives) or this partition's record key, and the value must
decode (``decode_visitor``, ``decode_customer``, ``decode_own_record``; a deletion,
``None``, is fine). A corrupt customer record leaves its customer as it was before it, or
new: a retention or advocacy it had already reached may then be announced again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import faust

from streams.engine.customers import decode_customer
from streams.engine.state import Corrupt
from streams.worker.flusher import watermark_key
from streams.worker.partition import CUSTOMER_PREFIX, decode_own_record, decode_visitor
from streams.worker.partitioning import partitions_for_keys
from streams.worker.publisher import CorruptRecord

log = logging.getLogger(__name__)


def screen(
    records: Sequence[tuple[int, bytes | None, bytes | None]], partitions: int
) -> list[Corrupt | None]:
    """For each changelog record (partition, key, value): why it is corrupt, or None.

    ``partitions``: the table's partition count (a visitor record belongs to the
    partition its key hashes to).
    """
    verdicts: list[Corrupt | None] = [None] * len(records)
    visitors: list[int] = []
    customers: list[int] = []
    for i, (partition, key, value) in enumerate(records):
        if not key:
            verdicts[i] = Corrupt("a record without a key")
        elif key.startswith(CUSTOMER_PREFIX):
            customers.append(i)
        elif key[:1] == b"\x00":
            if key != watermark_key(partition):
                verdicts[i] = Corrupt(f"key {key!r} is no record of partition {partition}")
            elif value is not None:
                own = decode_own_record(value)
                if isinstance(own, Corrupt):
                    verdicts[i] = own
        else:
            visitors.append(i)
    homes = partitions_for_keys([records[i][1] or b"" for i in visitors], partitions)
    for i, home in zip(visitors, homes, strict=True):
        partition, key, value = records[i]
        assert key is not None
        try:
            visitor = key.decode()
        except UnicodeDecodeError:
            verdicts[i] = Corrupt("a visitor key that is not UTF-8")
            continue
        if home != partition:
            verdicts[i] = Corrupt(f"visitor {visitor!r} belongs to partition {home}")
        elif value is not None:
            state = decode_visitor(visitor, value)
            if isinstance(state, Corrupt):
                verdicts[i] = state
    start = len(CUSTOMER_PREFIX)
    homes = partitions_for_keys([(records[i][1] or b"")[start:] for i in customers], partitions)
    for i, home in zip(customers, homes, strict=True):
        partition, key, value = records[i]
        if home != partition:
            verdicts[i] = Corrupt(f"customer {key!r} belongs to partition {home}")
        elif value is not None:
            customer = decode_customer(value)
            if isinstance(customer, Corrupt):
                verdicts[i] = customer
    return verdicts


class ScreenedTable(faust.Table[bytes, bytes]):
    """The Faust table of visitor records, whose recovery leaves corrupt records out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rejected: list[CorruptRecord] = []

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        """Apply the recovered records that decode; remember the others (see the module)."""
        events = list(batch)
        messages = [event.message for event in events]
        verdicts = screen([(m.partition, m.key, m.value) for m in messages], self.partitions or 1)
        kept = []
        for event, message, verdict in zip(events, messages, verdicts, strict=True):
            if verdict is None:
                kept.append(event)
                continue
            log.error(
                "changelog record at offset %d of %s[%d] cannot be decoded (%s); left out",
                message.offset, message.topic, message.partition, verdict.detail,
            )  # fmt: skip
            where = (message.topic, message.partition, message.offset, message.key)
            self._rejected.append(CorruptRecord("changelog", *where, message.value, verdict))
        super().apply_changelog_batch(kept)

    def take_rejected(self) -> list[CorruptRecord]:
        """The corrupt records left out since the last call (to count and dead-letter)."""
        rejected, self._rejected = self._rejected, []
        return rejected
