"""The Kafka sink's partitioner: exactly kafka-python's default partitions, computed once a key."""

from __future__ import annotations

import warnings

from streams.generator.sinks import VisitorPartitioner

with warnings.catch_warnings():
    # kafka-python 3.0 uses a deprecated importlib.resources call at import time.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner import DefaultPartitioner


class Cluster:
    """The two metadata questions the partitioners ask, for topics of a fixed size."""

    def __init__(self, partitions: dict[str, int]) -> None:
        """Topics and their partition counts."""
        self.partitions = partitions
        self.lookups = 0

    def topics(self) -> set[str]:
        """Known topic names."""
        return set(self.partitions)

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        """Partition ids of ``topic``, or None if it is unknown."""
        self.lookups += 1
        count = self.partitions.get(topic)
        return None if count is None else set(range(count))

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        """All partitions are available."""
        return self.partitions_for_topic(topic) or set()


def test_same_partitions_as_the_default_partitioner() -> None:
    """For many keys, topics and partition counts the answer equals kafka-python's default."""
    cluster = Cluster({"three": 3, "seven": 7})
    default, memoized = DefaultPartitioner(), VisitorPartitioner(max_keys=50)
    for repeat in range(2):  # the second pass answers from the memo (and past a reset)
        for i in range(300):
            key = f"{i:08x}-aaaa-4bbb-8ccc-{i * 7919:012x}".encode()
            for topic in ("three", "seven"):
                want = default.partition(topic, None, key, None, b"{}", cluster)
                got = memoized.partition(topic, None, key, None, b"{}", cluster)
                assert got == want, (repeat, i, topic)
    assert len(memoized._known) <= 50  # bounded: forgotten at once when full


def test_partition_count_change_is_not_answered_from_the_memo() -> None:
    """If the topic gains partitions, keys are hashed again over the new count."""
    cluster = Cluster({"t": 3})
    memoized = VisitorPartitioner()
    keys = [f"visitor-{i}".encode() for i in range(200)]
    for key in keys:
        memoized.partition("t", None, key, None, b"{}", cluster)
    cluster.partitions["t"] = 12
    default = DefaultPartitioner()
    moved = 0
    for key in keys:
        got = memoized.partition("t", None, key, None, b"{}", cluster)
        assert got == default.partition("t", None, key, None, b"{}", cluster)
        moved += got >= 3
    assert moved > 0


def test_keyless_records_fall_back_to_the_default() -> None:
    """Without a key the default's random choice among partitions applies, unmemoized."""
    cluster = Cluster({"t": 4})
    memoized = VisitorPartitioner()
    seen = {memoized.partition("t", None, None, None, b"{}", cluster) for _ in range(200)}
    assert seen <= {0, 1, 2, 3}
    assert len(seen) > 1
    assert memoized._known == {}
