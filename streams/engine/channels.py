"""GA4-style default channel grouping of a session's first touch (SPEC section 5).

Follows Google Analytics 4's published default channel group rules, in their order,
restricted to the groups journey-streams reports (Cross-network, Shopping, Video, Paid
Other, Audio and SMS fall through to later rules or Unassigned). The site lists are a
built-in, reasonable subset of GA4's; YouTube counts as social since there is no video group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

DIRECT = "Direct"
ORGANIC_SEARCH = "Organic Search"
PAID_SEARCH = "Paid Search"
ORGANIC_SOCIAL = "Organic Social"
PAID_SOCIAL = "Paid Social"
EMAIL = "Email"
REFERRAL = "Referral"
DISPLAY = "Display"
AFFILIATES = "Affiliates"
MOBILE_PUSH = "Mobile Push"
UNASSIGNED = "Unassigned"

_PAID_MEDIUM = re.compile(r"^(.*cp.*|ppc|retargeting|paid.*)$")
_DISPLAY_MEDIA = frozenset({"display", "banner", "expandable", "interstitial", "cpm"})
_SOCIAL_MEDIA = frozenset(
    {"social", "social-network", "social-media", "sm", "social network", "social media"}
)
_EMAIL_WORDS = frozenset({"email", "e-mail", "e_mail", "e mail"})
_REFERRAL_MEDIA = frozenset({"referral", "app", "link"})

# Names matched against a utm_source value or any label of a referrer host.
_SEARCH_NAMES = frozenset(
    {"google", "bing", "yahoo", "duckduckgo", "baidu", "yandex", "ecosia", "naver", "ask",
     "aol", "startpage", "qwant", "seznam", "sogou", "daum", "brave", "yahoo-search"}
)  # fmt: skip
_SOCIAL_NAMES = frozenset(
    {"facebook", "fb", "instagram", "ig", "twitter", "linkedin", "lnkd", "pinterest",
     "reddit", "tiktok", "snapchat", "youtube", "tumblr", "vk", "weibo", "quora", "threads",
     "whatsapp", "telegram", "discord", "messenger", "mastodon", "bsky", "line", "wechat"}
)  # fmt: skip
_SOCIAL_HOSTS = frozenset({"t.co", "x.com", "lnkd.in", "youtu.be", "pin.it", "redd.it"})
# Hosts whose labels look like a search engine but are not search (webmail, ads).
_NOT_SEARCH_HOSTS = frozenset({"mail.google.com", "mail.yahoo.com", "outlook.live.com"})


@dataclass(frozen=True, slots=True)
class Touchpoint:
    """How a session arrived: GA4 channel group plus its source, medium and campaign."""

    channel: str
    source: str
    medium: str
    campaign: str


def _labels(value: str) -> list[str]:
    return value.split(".")


def _is_search(source: str) -> bool:
    if source in _NOT_SEARCH_HOSTS:
        return False
    return any(label in _SEARCH_NAMES for label in _labels(source))


def _is_social(source: str) -> bool:
    if source in _SOCIAL_HOSTS:
        return True
    return any(label in _SOCIAL_NAMES for label in _labels(source))


def _search_name(host: str) -> str:
    for label in _labels(host):
        if label in _SEARCH_NAMES:
            return label
    return host


def channel_group(source: str, medium: str, campaign: str = "") -> str:
    """The GA4 default channel group of a (source, medium, campaign) triple.

    ``source`` and ``medium`` are compared case-insensitively; a source may be a name
    (``google``) or a host (``www.google.co.uk``).
    """
    source = source.strip().lower()
    medium = medium.strip().lower()
    if source == "(direct)" and medium in ("(none)", "(not set)"):
        return DIRECT
    paid = _PAID_MEDIUM.match(medium) is not None
    search = _is_search(source)
    social = _is_social(source)
    if search and paid:
        return PAID_SEARCH
    if social and paid:
        return PAID_SOCIAL
    if medium in _DISPLAY_MEDIA:
        return DISPLAY
    if social or medium in _SOCIAL_MEDIA:
        return ORGANIC_SOCIAL
    if search or medium == "organic":
        return ORGANIC_SEARCH
    if medium in _REFERRAL_MEDIA:
        return REFERRAL
    if source in _EMAIL_WORDS or medium in _EMAIL_WORDS:
        return EMAIL
    if medium == "affiliate":
        return AFFILIATES
    if (
        medium.endswith("push")
        or "mobile" in medium
        or "notification" in medium
        or source == "firebase"
    ):
        return MOBILE_PUSH
    return UNASSIGNED


def touchpoint(source: str, medium: str, campaign: str, referrer: str) -> Touchpoint:
    """Classify a session from its first event's campaign fields and external referrer.

    With a utm source or medium, they are used as given (``(not set)`` for a missing part).
    Otherwise a referrer host becomes the source with medium ``organic`` for a search
    engine and ``referral`` for any other site; with nothing at all the session is
    ``(direct)`` / ``(none)``.
    """
    if source or medium:
        src = source or "(not set)"
        med = medium or "(not set)"
        name = campaign or "(not set)"
        return Touchpoint(channel_group(src, med, name), src, med, name)
    host = _referrer_host(referrer)
    if host:
        if _is_search(host):
            src = _search_name(host)
            return Touchpoint(ORGANIC_SEARCH, src, "organic", campaign or "(organic)")
        return Touchpoint(
            channel_group(host, "referral", campaign), host, "referral", campaign or "(referral)"
        )
    return Touchpoint(DIRECT, "(direct)", "(none)", campaign or "(direct)")


def _referrer_host(referrer: str) -> str:
    if not referrer:
        return ""
    try:
        host = urlsplit(referrer if "//" in referrer else "//" + referrer).hostname or ""
    except ValueError:
        return ""
    host = host.lower()
    return host[4:] if host.startswith("www.") else host
