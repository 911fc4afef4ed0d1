"""Customer transitions from session signals: a repeat purchase, a first advocacy, once each."""

from __future__ import annotations

import itertools
import random

from streams.engine.customers import (
    ADVOCACY,
    CUSTOMER_ADVOCATE,
    CUSTOMER_RETAINED,
    PURCHASE,
    CustomerState,
    Signal,
    apply_signal,
    decode_customer,
    decode_signal,
    encode_customer,
    encode_signal,
    signals_of,
)
from streams.engine.rows import StageTransition
from streams.engine.state import Corrupt


def signal(kind: str, session: str, ts: int = 0, customer: str = "u1") -> Signal:
    return Signal(kind, customer, session, "v1", ts, "Direct")


def kinds(state: CustomerState, signals: list[Signal]) -> list[str]:
    made = [apply_signal(state, s) for s in signals]
    return [t.kind for t in made if t is not None]


def test_two_purchases_in_one_session_are_not_a_repeat() -> None:
    state = CustomerState()
    assert kinds(state, [signal(PURCHASE, "s1"), signal(PURCHASE, "s1")]) == []
    assert state == CustomerState(first_purchase_session="s1")


def test_a_purchase_in_a_second_session_retains_the_customer_once() -> None:
    state = CustomerState()
    purchases = [signal(PURCHASE, "s1", 10), signal(PURCHASE, "s2", 20), signal(PURCHASE, "s3", 30)]
    made = [apply_signal(state, s) for s in purchases]
    assert made[0] is None
    assert made[2] is None
    retained = made[1]
    assert retained is not None
    assert (retained.kind, retained.stage, retained.customer_key, retained.session_id,
            retained.ts_ms) == (CUSTOMER_RETAINED, "retention", "u1", "s2", 20)  # fmt: skip


def test_the_first_advocacy_makes_an_advocate_once_with_or_without_a_purchase() -> None:
    state = CustomerState()
    assert kinds(state, [signal(ADVOCACY, "s1"), signal(ADVOCACY, "s2")]) == [CUSTOMER_ADVOCATE]
    assert kinds(state, [signal(PURCHASE, "s3"), signal(PURCHASE, "s4")]) == [CUSTOMER_RETAINED]


def test_signals_applied_again_change_nothing() -> None:
    """A crash re-delivers signals: applying any prefix again leaves state and output alone."""
    signals = [signal(PURCHASE, "s1"), signal(ADVOCACY, "s1"), signal(PURCHASE, "s2")]
    once = CustomerState()
    first = kinds(once, signals)
    for cut in range(len(signals) + 1):
        twice = CustomerState()
        assert kinds(twice, signals[:cut]) + kinds(twice, signals) == first
        assert twice == once


def test_the_transitions_do_not_depend_on_which_session_purchased_first() -> None:
    """Any order of three sessions' purchases retains the customer exactly once."""
    sessions = [signal(PURCHASE, f"s{n}") for n in range(3)] + [signal(PURCHASE, "s0")]
    for order in itertools.permutations(sessions):
        assert kinds(CustomerState(), list(order)) == [CUSTOMER_RETAINED]


def test_signals_come_from_converted_and_advocacy_stages_keyed_by_user_else_visitor() -> None:
    def stage(stage: str, user: str, kind: str = "stage") -> StageTransition:
        return StageTransition(kind, stage, "awareness", "s9", "anon-1", user, 5, "Email")

    transitions = [
        stage("consideration", "u7"),
        stage("converted", "u7"),
        stage("advocacy", ""),
        stage("purchase", "", kind="cart_abandoned"),
        stage("retention", "u7"),
    ]
    assert signals_of(transitions) == [
        Signal(PURCHASE, "u7", "s9", "anon-1", 5, "Email"),
        Signal(ADVOCACY, "anon-1", "s9", "anon-1", 5, "Email"),
    ]


def test_records_round_trip_and_garbage_is_corrupt() -> None:
    s = signal(ADVOCACY, "s1", 123, customer="ü")
    assert decode_signal(encode_signal(s)) == s
    state = CustomerState("s1", True, False)
    assert decode_customer(encode_customer(state)) == state
    rng = random.Random(14)
    for _ in range(2000):
        junk = rng.randbytes(rng.randrange(0, 40))
        assert isinstance(decode_signal(junk), Signal | Corrupt)
        assert isinstance(decode_customer(junk), CustomerState | Corrupt)
    assert isinstance(decode_signal(b'["refund","u","s","v",1,"c"]'), Corrupt)
