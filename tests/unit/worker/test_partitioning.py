"""Our murmur2 partitioner agrees with aiokafka's (a port of the Java client's)."""

from __future__ import annotations

from aiokafka.partitioner import murmur2 as kafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.worker.partitioning import murmur2, partition_for_key, partitions_for_keys


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_murmur2_equals_aiokafka_on_any_bytes(data: bytes) -> None:
    assert murmur2(data) == kafka_murmur2(data)


def test_murmur2_on_every_tail_length_and_typical_keys() -> None:
    keys = [b"", b"a", b"ab", b"abc", b"abcd", b"abcde", b"\xff\xfe\xfd", b"\x80" * 7]
    keys += [f"3f2a9c1e-5b7d-4e8a-9c0f-{n:012d}".encode() for n in range(50)]
    for key in keys:
        assert murmur2(key) == kafka_murmur2(key), key


def test_partition_for_key_is_kafkas_default_partition() -> None:
    for n in range(200):
        key = f"visitor-{n}".encode()
        for partitions in (1, 4, 12):
            expected = (kafka_murmur2(key) & 0x7FFFFFFF) % partitions
            assert partition_for_key(key, partitions) == expected


def test_partition_cache_is_exact_and_bounded() -> None:
    """The cache answers as the partitioner does, for str and bytes keys, within its bound."""
    from streams.worker.partitioning import PartitionCache, partition_for_key

    cache = PartitionCache(7, size=100)
    keys = [f"visitor-{n}" for n in range(1000)]
    for _ in range(2):  # the second pass finds some keys cached, most recomputed
        for key in keys:
            assert cache(key) == partition_for_key(key.encode(), 7)
            assert cache(key.encode()) == partition_for_key(key.encode(), 7)
    assert len(cache._new) <= 100
    assert len(cache._old) <= 100
    busy = keys[0]
    for key in keys:  # a key in use stays cached while others come and go
        cache(key)
        cache(busy)
        assert busy in cache._new or busy in cache._old


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=70), max_size=40), st.integers(1, 64))
def test_partitions_for_keys_equal_one_key_at_a_time(keys: list[bytes], partitions: int) -> None:
    """The column-wise murmur2 gives Kafka's partition for every key, any lengths mixed."""
    expected = [(kafka_murmur2(key) & 0x7FFFFFFF) % partitions for key in keys]
    assert partitions_for_keys(keys, partitions) == expected
