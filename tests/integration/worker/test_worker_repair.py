"""GapFetcher reads exactly the skipped offsets of the real broker's topic."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from support import BROKERS, create_topic, delete_topics_with_prefixes

from streams.settings import Settings
from streams.worker.repair import GapFetcher


async def _produce(topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=BROKERS.split(","))
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, f"message-{n}".encode(), partition=1)
    finally:
        await producer.stop()


async def _fetch_ranges(topic: str, ranges: list[range]) -> list[list[tuple[int, bytes]]]:
    fetcher = GapFetcher(Settings.from_env({"JOURNEY_BROKERS": BROKERS}))
    return [await fetcher.fetch(topic, 1, offsets) for offsets in ranges]


@pytest.mark.integration
def test_fetch_returns_exactly_the_missing_offsets_in_order() -> None:
    prefix = f"wt-repair-{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}-by-visitor"
    create_topic(topic, 2)
    try:
        asyncio.run(asyncio.wait_for(_produce(topic, 20), timeout=60))
        # Two repairs with one consumer: a middle range, then an earlier one (seek back).
        middle, early = asyncio.run(
            asyncio.wait_for(_fetch_ranges(topic, [range(5, 9), range(0, 2)]), timeout=120)
        )
        assert middle == [(n, f"message-{n}".encode()) for n in range(5, 9)]
        assert early == [(0, b"message-0"), (1, b"message-1")]
    finally:
        delete_topics_with_prefixes([prefix])
