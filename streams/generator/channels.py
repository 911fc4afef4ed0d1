"""Where visitors come from: referrers and UTM tags per acquisition channel.

Each channel produces what a tracker really sees on the landing page: a ``page.referrer``
and ``utm_*`` query parameters in ``page.url`` (plus, for trackers that send it, a
``campaign`` object). The names follow GA4's default channel grouping so the engine's
channel attribution can be checked against the channel that generated the session.
"""

from __future__ import annotations

import random
from bisect import bisect
from dataclasses import dataclass
from functools import cache
from itertools import accumulate
from urllib.parse import urlencode

ORGANIC_SEARCH = "organic_search"
PAID_SEARCH = "paid_search"
ORGANIC_SOCIAL = "organic_social"
PAID_SOCIAL = "paid_social"
EMAIL = "email"
DIRECT = "direct"
REFERRAL = "referral"

#: Channel weights for a visitor without an account (email needs a known address).
ANONYMOUS_CHANNELS: tuple[tuple[str, int], ...] = (
    (ORGANIC_SEARCH, 34),
    (PAID_SEARCH, 18),
    (DIRECT, 20),
    (ORGANIC_SOCIAL, 10),
    (PAID_SOCIAL, 9),
    (REFERRAL, 9),
)
#: Channel weights for a known customer: email and direct take a larger share.
CUSTOMER_CHANNELS: tuple[tuple[str, int], ...] = (
    (EMAIL, 30),
    (DIRECT, 30),
    (ORGANIC_SEARCH, 20),
    (PAID_SEARCH, 8),
    (ORGANIC_SOCIAL, 6),
    (REFERRAL, 6),
)

_SEARCH_ENGINES = ("https://www.google.com/", "https://www.google.com/", "https://www.bing.com/")
_SOCIAL_SITES = (
    ("https://www.facebook.com/", "facebook"),
    ("https://l.instagram.com/", "instagram"),
    ("https://t.co/", "twitter"),
    ("https://www.pinterest.com/", "pinterest"),
    ("https://www.tiktok.com/", "tiktok"),
)
_REFERRING_SITES = (
    "https://www.nytimes.com/wirecutter/reviews/best-backpacks/",
    "https://www.reddit.com/r/BuyItForLife/",
    "https://blog.outdoorgearlab.example/best-tents/",
    "https://www.youtube.com/",
)
_CAMPAIGNS = ("spring_sale", "new_arrivals", "brand", "retargeting_cart", "summer_outdoor")
_EMAIL_CAMPAIGNS = ("weekly_newsletter", "back_in_stock", "abandoned_cart", "loyalty_points")


@dataclass(frozen=True, slots=True)
class Touchpoint:
    """How one session arrives: referrer, ``utm_*`` parameters, GA4 channel name."""

    channel: str
    referrer: str | None
    utm: tuple[tuple[str, str], ...]

    def landing_url(self, site: str, path: str) -> str:
        """The landing page URL as the browser shows it, with UTM tags when present."""
        if not self.utm:
            return f"{site}{path}"
        return f"{site}{path}?{_query(self.utm)}"

    def campaign(self) -> dict[str, str] | None:
        """The contract's ``campaign`` object, or None.

        UTM names map to the contract's fields by dropping the ``utm_`` prefix, except
        ``utm_campaign``, whose field is ``name`` (SPEC section 3).
        """
        if not self.utm:
            return None
        return {
            _CAMPAIGN_FIELD.get(key, key.removeprefix("utm_")): value for key, value in self.utm
        }


_CAMPAIGN_FIELD = {"utm_campaign": "name"}


@cache
def _query(utm: tuple[tuple[str, str], ...]) -> str:
    # Few distinct tag sets exist (sources x campaigns x terms), each encoded once.
    return urlencode(utm)


_ANONYMOUS = (
    [n for n, _ in ANONYMOUS_CHANNELS],
    list(accumulate(w for _, w in ANONYMOUS_CHANNELS)),
)
_CUSTOMER = ([n for n, _ in CUSTOMER_CHANNELS], list(accumulate(w for _, w in CUSTOMER_CHANNELS)))


def pick_channel(rng: random.Random, known_customer: bool) -> str:
    """Draw a session's channel; known customers can be reached by email."""
    names, cumulative = _CUSTOMER if known_customer else _ANONYMOUS
    # What rng.choices(names, cum_weights=cumulative) draws, without its per-call cost.
    return names[bisect(cumulative, rng.random() * cumulative[-1])]


def touchpoint(rng: random.Random, channel: str, term: str) -> Touchpoint:
    """The referrer and UTM tags of a session arriving through ``channel``."""
    if channel == ORGANIC_SEARCH:
        return Touchpoint(channel, rng.choice(_SEARCH_ENGINES), ())
    if channel == PAID_SEARCH:
        engine = rng.choice(_SEARCH_ENGINES)
        source = "bing" if "bing" in engine else "google"
        utm: tuple[tuple[str, str], ...] = (
            ("utm_source", source),
            ("utm_medium", "cpc"),
            ("utm_campaign", rng.choice(_CAMPAIGNS)),
            ("utm_term", term),
        )
        return Touchpoint(channel, engine, utm)
    if channel == ORGANIC_SOCIAL:
        return Touchpoint(channel, rng.choice(_SOCIAL_SITES)[0], ())
    if channel == PAID_SOCIAL:
        site, source = rng.choice(_SOCIAL_SITES)
        utm = (
            ("utm_source", source),
            ("utm_medium", "paid_social"),
            ("utm_campaign", rng.choice(_CAMPAIGNS)),
            ("utm_content", f"ad_{rng.randrange(1, 9)}"),
        )
        return Touchpoint(channel, site, utm)
    if channel == EMAIL:
        utm = (
            ("utm_source", "newsletter"),
            ("utm_medium", "email"),
            ("utm_campaign", rng.choice(_EMAIL_CAMPAIGNS)),
        )
        return Touchpoint(channel, None, utm)
    if channel == REFERRAL:
        return Touchpoint(channel, rng.choice(_REFERRING_SITES), ())
    return Touchpoint(DIRECT, None, ())
