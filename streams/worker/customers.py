"""The customer stage: signals read per owned partition, applied to customer states.

Sessions announce their purchases and advocacy as signals on the internal topic
``<app_id>-customer-signals``, keyed and partitioned by customer key
(``Publisher.publish``, see ``streams.engine.customers``). Signal partition ``p`` is read
by the worker that owns state partition ``p``, with a consumer of its own in the manner
of the direct intake (``IntakeConsumer`` with ``direct=True``): the loader tells it where
each loaded partition's signals start (the offset after the last signal its checkpoint
applied, ``PartitionState.signals_next``), so a restart or a rebalance goes on from the
checkpoint, never from a consumer group's position. The customer states and that offset
are in the partition's checkpoint, and the customer transitions in the output of the
messages it acknowledges, so exactly once they commit together in one transaction.

The signals topic is written in transactions: read ``read_committed``, its offsets have
holes (commit markers, aborted records), which this reader does not mind: it applies
what it is given in order and never waits for an offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.engine.customers import decode_signal
from streams.worker.intake import IntakeConsumer
from streams.worker.publisher import CorruptRecord, Publisher
from streams.worker.runtime import WorkerRuntime


class CustomerSignals:
    """Applies batches of signal records to the owned partitions' customer states."""

    def __init__(self, runtime: WorkerRuntime, publisher: Publisher) -> None:
        self._runtime = runtime
        self._publisher = publisher
        #: Set once the consumer exists (it is given this handler).
        self.consumer: IntakeConsumer | None = None

    async def take(self, batch: Sequence[Any]) -> None:
        """Apply a batch: each partition's signals to its state, if still the one read for.

        Records of a partition whose state was loaded again (or revoked) since the reader
        was positioned for it (``epoch``) are left: the new state reads them again from
        its checkpoint. A record that does not decode is dead-lettered and skipped, once
        (``PartitionState.apply_signals`` says which are taken now).
        """
        if not batch or self.consumer is None:
            return
        epochs = self.consumer.epochs
        by_partition: dict[int, list[Any]] = {}
        for record in batch:
            by_partition.setdefault(record.partition, []).append(record)
        runtime = self._runtime
        publisher = self._publisher
        async with runtime.lock:
            for partition, records in by_partition.items():
                state = runtime.partitions.get(partition)
                if state is None or state.epoch != epochs.get(partition):
                    continue
                at = {record.offset: record for record in records}
                made, corrupt = state.apply_signals(
                    (record.offset, decode_signal(_value(record))) for record in records
                )
                for offset, why in corrupt:
                    record = at[offset]
                    where = (record.topic, partition, offset, record.key)
                    await publisher.reject(
                        CorruptRecord("customer_signals", *where, _value(record), why)
                    )
                await publisher.publish_customers(made)


def _value(record: Any) -> bytes:
    """A record's value as bytes (a record without one reads as empty: it does not decode)."""
    return record.value if isinstance(record.value, bytes) else b""
