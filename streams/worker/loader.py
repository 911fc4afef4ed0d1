"""A by-visitor partition's state, rebuilt from the table records Faust recovered for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError

from streams.engine.sessionizer import SessionConfig
from streams.engine.stages import StageRules
from streams.errors import StreamError
from streams.settings import Settings
from streams.worker.flusher import VisitorTable, watermark_key
from streams.worker.partition import WATERMARK_KEY, PartitionState
from streams.worker.partitioning import partition_for_key
from streams.worker.repair import REPAIR_TIMEOUT_S, TopicReader
from streams.worker.runtime import WorkerRuntime, exit_unrecoverable

#: Direct mode: tells the intake to read an input partition from an epoch and offset
#: (``IntakeConsumer.own``; None: from the group's committed offset).
OwnInput = Callable[[int, int, int | None], None]


class PartitionLoader:
    """Loads the partitions assigned to this worker into ``WorkerRuntime.partitions``."""

    def __init__(
        self,
        settings: Settings,
        config: SessionConfig,
        rules: StageRules,
        runtime: WorkerRuntime,
        table: VisitorTable,
        topic: str,
        reader: TopicReader,
        own: OwnInput | None = None,
        own_signals: OwnInput | None = None,
    ) -> None:
        """``topic``: the by-visitor topic, whose log start ``reader`` reads when needed.

        ``own``: direct mode, where the intake reads each loaded partition from;
        ``own_signals``: where the customer signals reader reads each loaded partition's
        signals from (``streams.worker.customers``).
        """
        self._settings = settings
        self._config = config
        self._rules = rules
        self._runtime = runtime
        self._table = table
        self._topic = topic
        self._reader = reader
        self._own = own
        self._own_signals = own_signals
        #: What the visitor keys are under JOURNEY_PII (recorded with each partition).
        self._ids = settings.pii_identity()
        #: The last epoch given to a loaded partition (see IntakeConsumer.own).
        self._epoch = 0

    async def load(self, partition: int) -> PartitionState:
        """Rebuild a partition's state from the table records Faust recovered for it.

        A partition never checkpointed expects its messages from the start of the log: none
        was acknowledged, and a consumer that delivers a later one first has skipped some.
        """
        settings = self._settings
        n = settings.partitions
        store = self._table.data
        # Faust's memory store keeps its items in a plain dict: read it directly (hot path).
        cold: Any = getattr(store, "data", store)
        records = []
        raw_watermark = cold.get(watermark_key(partition))
        if raw_watermark is not None:
            records.append((WATERMARK_KEY, raw_watermark))
        state = PartitionState(
            partition,
            self._config,
            self._rules,
            records,
            loaded_ms=int(time.time() * 1000),
            cold=cold,
            owns=lambda raw: partition_for_key(raw, n) == partition,
            direct=settings.direct_input(),
            ids=self._ids,
        )
        if state.checkpointed and state.recorded_ids != state.ids:
            exit_unrecoverable(
                f"partition {partition} of app {settings.app_id!r} was written with "
                + ("raw ids" if not state.recorded_ids else "other pseudonyms")
                + " as visitor keys and this worker would make "
                + ("raw ids" if not state.ids else "other pseudonyms")
                + ": JOURNEY_PII and its key are fixed for an app (docs/architecture.md, "
                "'Personal data (JOURNEY_PII)'): set them back, or start a new "
                "JOURNEY_APP_ID with fresh tables"
            )
        if state.checkpointed and state.recorded_direct != state.direct:
            exit_unrecoverable(
                f"partition {partition} of app {settings.app_id!r} was run with "
                f"JOURNEY_INPUT_KEYED_BY_VISITOR={'true' if state.recorded_direct else 'false'}; "
                "an app keeps the mode of its first run (offsets in its state depend on it): "
                "set it back, or start a new JOURNEY_APP_ID"
            )
        self._epoch += 1
        state.epoch = self._epoch
        if self._own_signals is not None:
            self._own_signals(partition, state.epoch, state.signals_next)
        if state.direct and self._own is not None:
            source = state.sources.get(partition)
            if state.input_topic != settings.input_topic:
                source = None
            self._own(partition, state.epoch, None if source is None else source[0])
        if not state.checkpointed:
            topic = self._topic
            try:
                start = await asyncio.wait_for(
                    self._reader.log_start(topic, partition), REPAIR_TIMEOUT_S
                )
            except (StreamError, KafkaError, TimeoutError):
                exit_unrecoverable(f"the log start of {topic}[{partition}] could not be read")
            state.expect_from(start)
        self._runtime.partitions[partition] = state
        return state
