"""A partition's customer states: signals applied once each, across checkpoints and crashes."""

from __future__ import annotations

from streams.engine.customers import (
    ADVOCACY,
    CUSTOMER_ADVOCATE,
    CUSTOMER_RETAINED,
    PURCHASE,
    CustomerState,
    CustomerTransition,
    Signal,
    decode_customer,
)
from streams.engine.sessionizer import SessionConfig
from streams.engine.stages import StageRules
from streams.engine.state import Corrupt
from streams.worker.changelog import screen
from streams.worker.partition import (
    WATERMARK_KEY,
    PartitionState,
    customer_record_key,
    decode_own_record,
)
from streams.worker.partitioning import partition_for_key

CONFIG = SessionConfig()
RULES = StageRules.default()


def sig(kind: str, customer: str, session: str) -> Signal:
    return Signal(kind, customer, session, f"anon-{session}", 1_000, "Direct")


#: Offsets 0..7 of one signal partition. Hand count: u1 purchases in s1 (twice: two
#: purchases of one session), then s2 -> retained at offset 3; u2 advocates at 2 and 5 ->
#: one advocate; u3 purchases in s5 only, then advocates -> advocate at 7, never retained.
SIGNALS = [
    (0, sig(PURCHASE, "u1", "s1")),
    (1, sig(PURCHASE, "u1", "s1")),
    (2, sig(ADVOCACY, "u2", "s3")),
    (3, sig(PURCHASE, "u1", "s2")),
    (4, sig(PURCHASE, "u3", "s5")),
    (5, sig(ADVOCACY, "u2", "s4")),
    (6, sig(PURCHASE, "u3", "s5")),
    (7, sig(ADVOCACY, "u3", "s6")),
]
EXPECTED = [(CUSTOMER_RETAINED, "u1", "s2"), (CUSTOMER_ADVOCATE, "u2", "s3"),
            (CUSTOMER_ADVOCATE, "u3", "s6")]  # fmt: skip


def made(applied: tuple[list[CustomerTransition], list]) -> list[tuple[str, str, str]]:
    transitions, corrupt = applied
    assert corrupt == []
    return [(t.kind, t.customer_key, t.session_id) for t in transitions]


def restored(writes: list[tuple[bytes, bytes | None]]) -> PartitionState:
    return PartitionState(0, CONFIG, RULES, [(k, v) for k, v in writes if v is not None])


def test_signals_in_one_run_make_each_transition_once() -> None:
    state = PartitionState(0, CONFIG, RULES)
    assert sorted(made(state.apply_signals(SIGNALS))) == sorted(EXPECTED)
    assert state.signals_next == 8


def test_a_restart_from_a_checkpoint_skips_the_signals_it_holds() -> None:
    """Signals applied before the checkpoint and read again after it make nothing again."""
    first = PartitionState(0, CONFIG, RULES)
    before = made(first.apply_signals(SIGNALS[:4]))
    checkpoint = first.checkpoint()
    again = restored(checkpoint.writes)
    assert again.signals_next == 4
    after = made(again.apply_signals(SIGNALS))  # read again from the start
    assert sorted(before + after) == sorted(EXPECTED)


def test_a_crash_before_the_checkpoint_redoes_the_work_once() -> None:
    """Output after the last checkpoint is aborted with its transaction and made again."""
    first = PartitionState(0, CONFIG, RULES)
    committed = made(first.apply_signals(SIGNALS[:2]))
    checkpoint = first.checkpoint()
    first.apply_signals(SIGNALS[2:6])  # lost in the crash: never checkpointed
    again = restored(checkpoint.writes)
    redone = made(again.apply_signals(SIGNALS[2:]))
    assert sorted(committed + redone) == sorted(EXPECTED)


def test_the_checkpoint_writes_changed_customers_and_the_signal_offset() -> None:
    state = PartitionState(0, CONFIG, RULES)
    state.apply_signals(SIGNALS[:3])
    writes = dict(state.checkpoint().writes)
    assert decode_customer(writes[customer_record_key("u1")]) == CustomerState("s1")
    assert decode_customer(writes[customer_record_key("u2")]) == CustomerState(advocate=True)
    own = decode_own_record(writes[WATERMARK_KEY])
    assert not isinstance(own, Exception)
    assert own.extra is not None
    assert own.extra.c == 3
    # Nothing changed since: the next checkpoint writes no customer.
    state.apply_signals([(3, sig(PURCHASE, "u1", "s1"))])  # the same session again
    assert [k for k, _ in state.checkpoint().writes if k != WATERMARK_KEY] == []


def test_customer_records_are_screened_at_recovery() -> None:
    """A customer record decodes and sits in the partition its key hashes to; else corrupt."""
    partitions = 4
    key = customer_record_key("u1")
    home = partition_for_key(b"u1", partitions)
    other = (home + 1) % partitions
    good = PartitionState(0, CONFIG, RULES)
    good.apply_signals([(0, sig(PURCHASE, "u1", "s1"))])
    value = dict(good.checkpoint().writes)[key]
    verdicts = screen(
        [(home, key, value), (other, key, value), (home, key, b"\xc1junk"), (home, key, None)],
        partitions,
    )
    assert verdicts[0] is None
    assert verdicts[1] is not None
    assert f"belongs to partition {home}" in verdicts[1].detail
    assert verdicts[2] is not None
    assert verdicts[3] is None  # a deletion


def test_a_signal_that_does_not_decode_is_taken_once_and_skipped() -> None:
    """Returned for the dead-letter topic when taken; read again later, it is not."""
    bad = Corrupt("customer signal: junk")
    state = PartitionState(0, CONFIG, RULES)
    transitions, corrupt = state.apply_signals([(0, SIGNALS[0][1]), (1, bad), (2, SIGNALS[3][1])])
    assert corrupt == [(1, bad)]
    assert [(t.kind, t.customer_key) for t in transitions] == [(CUSTOMER_RETAINED, "u1")]
    assert state.signals_next == 3
    again = restored(state.checkpoint().writes)
    assert again.apply_signals([(1, bad), (2, SIGNALS[3][1])]) == ([], [])
