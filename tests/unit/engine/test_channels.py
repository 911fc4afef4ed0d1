"""GA4-style default channel grouping, table driven."""

from __future__ import annotations

import pytest

from streams.engine.channels import Touchpoint, channel_group, touchpoint


@pytest.mark.parametrize(
    ("source", "medium", "campaign", "channel"),
    [
        ("(direct)", "(none)", "", "Direct"),
        ("google", "cpc", "", "Paid Search"),
        ("bing", "ppc", "", "Paid Search"),
        ("www.google.co.uk", "paidsearch", "", "Paid Search"),
        ("facebook", "paid_social", "", "Paid Social"),
        ("ig", "cpc", "", "Paid Social"),
        ("t.co", "retargeting", "", "Paid Social"),
        ("criteo", "display", "", "Display"),
        ("anything", "cpm", "", "Display"),
        ("facebook", "referral", "", "Organic Social"),
        ("newsletter-partner", "social", "", "Organic Social"),
        ("duckduckgo", "referral", "", "Organic Search"),
        ("someblog", "organic", "", "Organic Search"),
        ("someblog.example", "referral", "", "Referral"),
        ("partner-app", "app", "", "Referral"),
        ("newsletter", "email", "", "Email"),
        ("e-mail", "(not set)", "", "Email"),
        ("awin", "affiliate", "", "Affiliates"),
        ("firebase", "(not set)", "", "Mobile Push"),
        ("app", "web-push", "", "Mobile Push"),
        ("app", "mobile_notification", "", "Mobile Push"),
        ("tv", "radio", "", "Unassigned"),
        ("criteo", "cpc", "", "Unassigned"),  # GA4 "Paid Other", not a group we report
    ],
)
def test_channel_group(source: str, medium: str, campaign: str, channel: str) -> None:
    """Source/medium pairs fall into GA4's default channel groups in GA4's rule order."""
    assert channel_group(source, medium, campaign) == channel


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("", "", "", ""), Touchpoint("Direct", "(direct)", "(none)", "(direct)")),
        (("", "", "", "https://www.google.com/search?q=x"),
         Touchpoint("Organic Search", "google", "organic", "(organic)")),
        (("", "", "", "https://www.blog.example/post"),
         Touchpoint("Referral", "blog.example", "referral", "(referral)")),
        (("", "", "", "https://m.facebook.com/"),
         Touchpoint("Organic Social", "m.facebook.com", "referral", "(referral)")),
        (("google", "cpc", "spring", "https://www.google.com/"),
         Touchpoint("Paid Search", "google", "cpc", "spring")),
        (("newsletter", "", "", ""),
         Touchpoint("Unassigned", "newsletter", "(not set)", "(not set)")),
    ],
)  # fmt: skip
def test_touchpoint_from_campaign_or_referrer(
    args: tuple[str, str, str, str], expected: Touchpoint
) -> None:
    """UTM fields win; else the referrer host is the source; else (direct)/(none)."""
    assert touchpoint(*args) == expected
