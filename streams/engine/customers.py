"""Customer-level transitions in real time: a repeat purchase, a first advocacy (issue 14).

Sessions announce their stages once each (``StageTransition``); two of those matter to a
customer rather than to a session:

* ``converted``: the session's first purchase. A customer's purchase in a *second
  distinct session* makes the customer retained: ``customer_retained``, once per customer;
* ``advocacy``: the session's first advocacy event (a review, a share, a referral, an NPS
  score of 9-10). The customer's first one makes an advocate: ``customer_advocate``, once.

A customer spans visitors (two devices that log in as one user), and the worker's state
is partitioned by visitor, so these are decided in two steps: the sessions' transitions
become *signals* keyed by the customer key known at that moment (the session's user_id,
else the visitor key: :func:`signals_of`), and the state of each customer, which holds
only the session of its first purchase and two flags, turns signals into customer
transitions (:func:`apply_signal`). Applying a signal twice changes nothing, so a signal
delivered again after a crash is harmless.

The customer key here is what the worker knows when the session announces: a session that
purchased anonymously before its visitor ever logged in counts for the visitor key, and
the login does not move it to the user later. ClickHouse's figures stitch retroactively
(docs/metrics.md, "Customer level"); these records are the real-time signal, never
retracted.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from streams.engine.rows import StageTransition
from streams.engine.state import Corrupt

#: Signal kinds, by the session stage they come from.
PURCHASE = "purchase"
ADVOCACY = "advocacy"
_SIGNAL_OF_STAGE = {"converted": PURCHASE, "advocacy": ADVOCACY}

#: Customer transition kinds (the records' ``kind``) and the journey stage each reaches.
CUSTOMER_RETAINED = "customer_retained"
CUSTOMER_ADVOCATE = "customer_advocate"
STAGE_OF_KIND = {CUSTOMER_RETAINED: "retention", CUSTOMER_ADVOCATE: "advocacy"}


class Signal(msgspec.Struct, frozen=True, array_like=True):
    """A session's purchase or advocacy, for its customer (a record of the signals topic)."""

    kind: str  # PURCHASE | ADVOCACY
    customer_key: str
    session_id: str
    visitor_key: str
    ts_ms: int
    channel: str


class CustomerState(msgspec.Struct, array_like=True):
    """What decides a customer's transitions: the first purchase's session and two flags."""

    first_purchase_session: str = ""
    retained: bool = False
    advocate: bool = False


class CustomerTransition(msgspec.Struct, frozen=True):
    """A customer reaching retention or advocacy (a record of the transitions topic).

    ``session_id``, ``visitor_key`` and ``channel`` are those of the session that made it.
    """

    kind: str  # CUSTOMER_RETAINED | CUSTOMER_ADVOCATE
    stage: str  # retention | advocacy
    customer_key: str
    session_id: str
    visitor_key: str
    ts_ms: int
    channel: str


def customer_key(transition: StageTransition) -> str:
    """The customer key known when a session announced: its user_id, else its visitor key."""
    return transition.user_id or transition.visitor_key


def signals_of(transitions: Iterable[StageTransition]) -> list[Signal]:
    """The signals among a call's transitions: each session's purchase and advocacy."""
    signals = []
    for t in transitions:
        if t.kind == "stage":
            kind = _SIGNAL_OF_STAGE.get(t.stage)
            if kind is not None:
                signals.append(
                    Signal(kind, customer_key(t), t.session_id, t.visitor_key, t.ts_ms, t.channel)
                )
    return signals


def apply_signal(state: CustomerState, signal: Signal) -> CustomerTransition | None:
    """Apply ``signal`` to its customer's ``state`` (in place); the transition it makes, if any.

    A purchase in a session other than the first purchase's makes the customer retained;
    the first advocacy makes an advocate. Each happens once; a signal seen before (the same
    session's purchase again) changes nothing.
    """
    if signal.kind == PURCHASE:
        if not state.first_purchase_session:
            state.first_purchase_session = signal.session_id
            return None
        if state.retained or signal.session_id == state.first_purchase_session:
            return None
        state.retained = True
        return _transition(CUSTOMER_RETAINED, signal)
    if signal.kind == ADVOCACY and not state.advocate:
        state.advocate = True
        return _transition(CUSTOMER_ADVOCATE, signal)
    return None


def _transition(kind: str, signal: Signal) -> CustomerTransition:
    return CustomerTransition(
        kind, STAGE_OF_KIND[kind], signal.customer_key, signal.session_id, signal.visitor_key,
        signal.ts_ms, signal.channel,
    )  # fmt: skip


encode_signal = msgspec.json.Encoder().encode
_decode_signal = msgspec.json.Decoder(Signal).decode
encode_customer = msgspec.msgpack.Encoder().encode
_decode_customer = msgspec.msgpack.Decoder(CustomerState).decode


def decode_signal(raw: bytes) -> Signal | Corrupt:
    """A signals-topic record decoded, or why it cannot be."""
    try:
        signal = _decode_signal(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Corrupt(f"customer signal: {exc}")
    if signal.kind not in (PURCHASE, ADVOCACY):
        return Corrupt(f"customer signal of kind {signal.kind!r}")
    return signal


def decode_customer(raw: bytes) -> CustomerState | Corrupt:
    """A customer's state record decoded, or why it cannot be."""
    try:
        return _decode_customer(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Corrupt(f"customer record: {exc}")
