"""Personal-data controls (``JOURNEY_PII``): what of an event's personal data leaves the process.

``keep`` (the default) changes nothing. ``hash`` replaces ``user_id`` and ``anonymous_id``
(so the visitor key too) with a keyed pseudonym, and cuts the query string and fragment off
page URLs, paths and referrers. ``drop`` does what ``hash`` does and also blanks user agents
and page titles, and dead letters carry no payload at all.

Both act at intake, right after an event is accepted (:meth:`Pseudonymiser.parse` wraps
``parse_payload``; replay calls :meth:`Pseudonymiser.events`), so nothing downstream (the
sessionizer, the by-visitor topic, the changelog, ClickHouse, the output topics) ever holds
a raw id. Everything the engine derives from the removed data is derived first: campaign
fields are read from the URL's ``utm_*`` before the query goes, a referrer's host (the
channel) survives the cut, and ``drop`` keeps the device class guessed from the user agent.
Figures depend on ids only through their equality, and the pseudonym of an id is the same
wherever and whenever it is computed with the same key, so every figure is unchanged.
"""

from __future__ import annotations

import hmac
from typing import Any

import msgspec
import orjson

from streams.engine.events import Event
from streams.engine.intake import MAX_MESSAGE_BYTES, IntakeResult, Rejection, parse_payload

#: The values of ``JOURNEY_PII``.
PII_MODES = ("keep", "hash", "drop")
#: Hex digits of HMAC-SHA256 kept as the pseudonym: 128 bits, no collision in practice.
PSEUDONYM_CHARS = 32
#: Ids remembered with their pseudonym. Live traffic repeats a visitor's id on every click
#: seconds apart; clearing when full keeps a hit to one dict lookup (as the intake's memos).
_CACHE_SIZE = 65_536
#: Members of an event (or of its sections) that hold an id, a URL, or (``drop``) other
#: personal text, as the dead-letter payload is rewritten.
_ID_MEMBERS = frozenset({"anonymous_id", "user_id"})
_URL_MEMBERS = frozenset({"url", "path", "referrer"})
#: Deeper than this a payload is withheld rather than walked (the intake rejects beyond 32).
_SCRUB_DEPTH = 64


def strip_url(url: str) -> str:
    """``url`` without its query string and fragment (everything from the first ``?`` or ``#``)."""
    cut = len(url)
    for mark in ("?", "#"):
        at = url.find(mark, 0, cut)
        if at >= 0:
            cut = at
    return url[:cut]


class Pseudonymiser:
    """Rewrites accepted events and dead letters for ``JOURNEY_PII=hash`` or ``drop``.

    The pseudonym of an id is the first 32 hex digits of HMAC-SHA256 under the key, of the
    id's UTF-8 bytes: stable across processes and runs, so sessions, visitors and customers
    still join, and a store holding the key can compute the pseudonym of a customer id it
    knows. Without the key it cannot be reversed or recomputed from guessed ids.
    """

    __slots__ = ("_drop", "_ids", "_key", "mode")

    def __init__(self, mode: str, key: bytes) -> None:
        if mode not in ("hash", "drop"):
            raise ValueError(f"a Pseudonymiser is for hash or drop, not {mode!r}")
        if not key:
            raise ValueError("a Pseudonymiser needs a key")
        self.mode = mode
        self._key = key
        self._drop = mode == "drop"
        self._ids: dict[str, str] = {}

    @property
    def fingerprint(self) -> str:
        """Names the key without revealing it: 16 hex digits of its HMAC of a fixed text.

        Recorded with each state partition, so that a worker whose key (and so whose
        visitor keys) differ from those the state was written with stops instead of
        splitting every visitor in two.
        """
        return hmac.digest(self._key, b"journey-streams pseudonym key", "sha256").hex()[:16]

    def pseudonym(self, value: str) -> str:
        """The keyed pseudonym of one id; ``""`` stays ``""`` (absent stays absent)."""
        if not value:
            return ""
        ids = self._ids
        known = ids.get(value)
        if known is None:
            digest = hmac.digest(self._key, value.encode("utf-8", "surrogatepass"), "sha256")
            known = digest.hex()[:PSEUDONYM_CHARS]
            if len(ids) >= _CACHE_SIZE:
                ids.clear()
            ids[value] = known
        return known

    def event(self, ev: Event) -> Event:
        """``ev`` with its ids pseudonymised, URLs stripped (and with ``drop``, no UA or title)."""
        pseudonym = self.pseudonym
        anonymous_id = pseudonym(ev.anonymous_id)
        user_id = pseudonym(ev.user_id)
        changes: dict[str, Any] = {
            "visitor_key": anonymous_id or user_id,
            "anonymous_id": anonymous_id,
            "user_id": user_id,
        }
        url, path, referrer = ev.page_url, ev.page_path, ev.referrer
        if "?" in url or "#" in url:
            changes["page_url"] = strip_url(url)
        if "?" in path or "#" in path:
            changes["page_path"] = strip_url(path)
        if "?" in referrer or "#" in referrer:
            changes["referrer"] = strip_url(referrer)
        if self._drop:
            # The device class is all the engine reads of a user agent: keep it.
            changes["device_type"] = ev.device
            changes["user_agent"] = ""
            changes["page_title"] = ""
        return msgspec.structs.replace(ev, **changes)

    def events(self, events: list[Event]) -> list[Event]:
        """Every event of ``events`` rewritten (:meth:`event`)."""
        event = self.event
        return [event(ev) for ev in events]

    def parse(self, payload: bytes, now_ms: int) -> IntakeResult:
        """``parse_payload``, then its events and its rejections' payloads rewritten."""
        result = parse_payload(payload, now_ms)
        if result.events:
            result.events = self.events(result.events)
        if result.rejections:
            result.rejections = [self.rejection(r) for r in result.rejections]
        return result

    def rejection(self, rejection: Rejection) -> Rejection:
        """A rejection whose payload may go to the dead-letter topic.

        ``drop``: no payload. ``hash``: a payload that is JSON has its ids pseudonymised and
        its URLs stripped wherever an event (or a batch element) puts them; a payload that
        is not JSON (or too large to read) cannot be searched for ids, so it is withheld.
        The original size is kept either way.
        """
        payload = rejection.payload
        scrubbed: bytes | None = None
        if not self._drop and len(payload) <= MAX_MESSAGE_BYTES:
            try:
                doc = orjson.loads(payload)
                scrubbed = orjson.dumps(self._scrub(doc, 0))
            except (orjson.JSONDecodeError, orjson.JSONEncodeError, _TooDeep):
                scrubbed = None
        return Rejection(
            rejection.reason,
            b"" if scrubbed is None else scrubbed,
            rejection.index,
            size=len(payload),
            withheld=scrubbed is None,
        )

    def _scrub(self, value: Any, depth: int) -> Any:
        """A decoded dead-letter payload with every id, URL (and ``drop`` text) rewritten.

        Any member named like an id is pseudonymised whatever its type (a number or an
        object there is still somebody's id: the JSON text of it is hashed), at any depth:
        a rejected payload need not have the contract's shape.
        """
        if depth > _SCRUB_DEPTH:
            raise _TooDeep
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            for name, member in value.items():
                if name in _ID_MEMBERS and member is not None:
                    text = member if isinstance(member, str) else orjson.dumps(member).decode()
                    out[name] = self.pseudonym(text)
                elif name in _URL_MEMBERS and isinstance(member, str):
                    out[name] = strip_url(member)
                elif name in _URL_MEMBERS and member is not None:
                    out[name] = None  # not text: nothing to strip safely
                else:
                    out[name] = self._scrub(member, depth + 1)
            return out
        if isinstance(value, list):
            return [self._scrub(member, depth + 1) for member in value]
        return value


class _TooDeep(Exception):
    """A dead-letter payload nested too deep to walk: it is withheld."""


def pseudonymiser(mode: str, key: bytes) -> Pseudonymiser | None:
    """The ``Pseudonymiser`` of a mode, ``None`` for ``keep`` (nothing to do, nothing paid)."""
    if mode == "keep":
        return None
    return Pseudonymiser(mode, key)
