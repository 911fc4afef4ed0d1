"""The output producer's transactions: each holds exactly the output its checkpoint covers."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.structs import TopicPartition

from streams.settings import Settings
from streams.worker.output import OutputProducer, transactional_id


class _Builder:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, key: bytes | None, value: bytes, timestamp: Any) -> object:
        self.records.append(value)
        return object()

    def record_count(self) -> int:
        return len(self.records)


class _TransactionalClient:
    """A transactional aiokafka producer reduced to a log of what reached the broker."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    def create_batch(self) -> _Builder:
        return _Builder()

    async def send_batch(self, builder: _Builder, topic: str, partition: int) -> Any:
        self.log.extend(("record", topic, value) for value in builder.records)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.log.append(("offsets", group_id, dict(offsets)))

    async def commit_transaction(self) -> None:
        self.log.append(("commit",))

    async def begin_transaction(self) -> None:
        self.log.append(("begin",))


def test_records_after_the_take_go_to_the_next_transaction() -> None:
    """Sealed: the checkpoint's records and offsets commit; later ones wait for the next one."""

    async def scenario() -> list[Any]:
        output = OutputProducer(Settings(), "app-output-test")
        client = output._producer = _TransactionalClient()  # type: ignore[assignment]
        await output.send("transitions", b"v", b"before", partition=0)
        await output.submit()  # handed over at a tick: still the open transaction's
        await output.send("transitions", b"v", b"before-2", partition=0)
        output.seal()  # the checkpoint is taken
        await output.send("transitions", b"v", b"after", partition=0)
        await output.send_to_partition("changelog", 0, [(b"v", b"state")], checkpoint=True)
        await output.submit()  # a tick while the checkpoint is written
        assert ("record", "transitions", b"after") not in client.log
        offsets = {TopicPartition("input", 0): 7}
        await output.commit(offsets, "app-intake")
        await output.submit()
        return client.log

    log = asyncio.run(scenario())
    commit = log.index(("commit",))
    before_commit = log[:commit]
    assert ("record", "transitions", b"before") in before_commit
    assert ("record", "transitions", b"before-2") in before_commit
    assert ("record", "changelog", b"state") in before_commit
    assert before_commit[-1] == ("offsets", "app-intake", {TopicPartition("input", 0): 7})
    assert log[commit + 1] == ("begin",)
    assert log[commit + 2 :] == [("record", "transitions", b"after")]


def test_transactional_id_is_stable_per_data_folder() -> None:
    """The same app and data folder give the same id (a restart fences); another folder not."""
    one = Settings(app_id="shop", data_dir="/var/lib/journey/worker-0")
    assert transactional_id(one) == transactional_id(
        Settings(app_id="shop", data_dir="/var/lib/journey/worker-0")
    )
    assert transactional_id(one) != transactional_id(
        Settings(app_id="shop", data_dir="/var/lib/journey/worker-1")
    )
    assert transactional_id(one).startswith("shop-output-")
