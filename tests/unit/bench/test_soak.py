"""The soak's traffic: one generated pool sent round after round as new visitors."""

from __future__ import annotations

from streams.bench.data import paced_events
from streams.bench.soak import SAMPLE, followed, rounds


def test_rounds_make_every_id_new_and_leave_the_pool_unchanged() -> None:
    """Round k suffixes event, visitor, user, order and cart ids with ~k; round 0 is the pool."""
    pool = paced_events(400, seed=3)
    pool.append({"event_id": "e-buy", "event_type": "purchase", "anonymous_id": "a",
                 "user_id": "u", "properties": {"order_id": 17, "cart_id": "c1"}})  # fmt: skip
    before = [dict(event) for event in pool]
    stream = rounds(pool)
    first = [next(stream) for _ in pool]
    second = [next(stream) for _ in pool]
    third = [next(stream) for _ in pool]
    assert first == before
    assert pool == before
    assert second[-1]["properties"] == {"order_id": "17~1", "cart_id": "c1~1"}
    assert third[-1]["user_id"] == "u~2"
    assert pool[-1]["properties"] == {"order_id": 17, "cart_id": "c1"}
    for k, events in ((1, second), (2, third)):
        for original, copy in zip(before, events, strict=True):
            assert copy["event_id"] == f"{original['event_id']}~{k}"
            assert copy["anonymous_id"] == f"{original['anonymous_id']}~{k}"
            assert copy["event_type"] == original["event_type"]
    ids = [event["event_id"] for event in first + second + third]
    assert len(set(ids)) == len(ids)


def test_the_followed_sample_is_about_one_visitor_in_sample() -> None:
    """The sample is a fixed share of visitors, chosen by key (every event of one is in)."""
    keys = [f"visitor-{i}" for i in range(40_000)]
    share = sum(followed(key) for key in keys) / len(keys)
    assert abs(share - 1 / SAMPLE) < 0.01
    assert [followed(key) for key in keys[:100]] == [followed(key) for key in keys[:100]]
