"""Stage rules: shipped defaults, store overrides and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_support import T0, ev

from streams.engine.stages import (
    DEFAULT_RULES_PATH,
    FLAG_ADVOCACY,
    FLAG_CONVERSION,
    FLAG_RETENTION,
    StageRules,
    load_stage_rules,
    parse_stage_rules,
)
from streams.errors import ConfigError


def test_shipped_yaml_equals_builtin_defaults() -> None:
    """schemas/stages.yaml holds exactly the SPEC section 2 defaults."""
    assert load_stage_rules(DEFAULT_RULES_PATH) == StageRules.default()
    assert load_stage_rules(None) == StageRules.default()


@pytest.mark.parametrize(
    ("event_type", "fields", "expected"),
    [
        ("page_view", {}, (1, 0)),
        ("product_view", {}, (2, 0)),
        ("search", {}, (2, 0)),
        ("add_to_cart", {}, (3, 0)),
        ("purchase", {}, (3, FLAG_CONVERSION)),
        ("email_open", {"user_id": "u"}, (1, FLAG_RETENTION)),
        ("email_open", {}, (1, 0)),
        ("share", {}, (1, FLAG_ADVOCACY)),
        ("survey_response", {"scale": 10, "score": 9.0}, (1, FLAG_ADVOCACY)),
        ("survey_response", {"scale": 10, "score": 8.5}, (1, 0)),
        ("survey_response", {"scale": 5, "score": 5.0}, (1, 0)),
        ("my_custom_event", {}, (1, 0)),
    ],
)
def test_default_classification(
    event_type: str, fields: dict[str, object], expected: tuple[int, int]
) -> None:
    """Default rules map each event type to its funnel rank and flags (SPEC section 2)."""
    assert StageRules.default().classify(ev("e", T0, event_type, **fields)) == expected


def test_store_file_replaces_defaults_and_allows_custom_events(tmp_path: Path) -> None:
    """A store's file replaces the defaults entirely and may name custom events."""
    path = tmp_path / "rules.yaml"
    path.write_text("stages:\n  consideration: [size_guide_open]\n  purchase: [quote_request]\n")
    rules = load_stage_rules(path)
    assert rules.classify(ev("e", T0, "size_guide_open")) == (2, 0)
    assert rules.classify(ev("e", T0, "product_view")) == (1, 0)
    assert rules.classify(ev("e", T0, "purchase")) == (1, FLAG_CONVERSION)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("stages:\n  awareness: []\n  wishlist: [x]\n", 3, "unknown stage 'wishlist'"),
        ("stages:\n  consideration: search\n", 2, "must be a list"),
        ("stages: {}\nfunel: []\n", 2, "unknown key 'funel'"),
        ("stages:\n  consideration: [search]\n  purchase:\n    - search\n", 4,
         "event 'search' is in funnel stages 'consideration' and 'purchase'"),
        ("stages:\n  advocacy:\n    - {event: survey_response, scal: 10}\n", 3,
         "unknown key 'scal'"),
        ("stages:\n  advocacy:\n    - {event: survey_response, scale: 7}\n", 3, "scale must be 5"),
        ("stages:\n  purchase: [a]\n  purchase: [b]\n", 3, "duplicate key 'purchase'"),
        ("funnel: [purchase, awareness, consideration]\nstages: {}\n", 1, "funnel must be"),
        ("stages:\n  consideration: [search, search]\n", 2, "listed twice"),
        ("stages:\n  purchase: [a\n", 3, "not valid YAML"),
        ("stages:\n  purchase: [12]\n", 2, "must be a text value"),
        ("", 1, "empty"),
    ],
)  # fmt: skip
def test_bad_rules_name_file_line_and_problem(text: str, line: int, problem: str) -> None:
    """A bad rules file raises ConfigError with the file name, the line and the problem."""
    with pytest.raises(ConfigError) as info:
        parse_stage_rules(text, "store.yaml")
    message = str(info.value)
    assert message.startswith(f"store.yaml:{line}: ")
    assert problem in message


def test_unreadable_file_is_config_error(tmp_path: Path) -> None:
    """A missing rules file is a ConfigError naming the path."""
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_stage_rules(tmp_path / "nope.yaml")


def test_event_types_are_every_type_the_rules_name() -> None:
    """The default rules name SPEC section 2's types; a store's file names its own."""
    assert StageRules.default().event_types == {
        "product_view", "search", "add_to_wishlist", "product_compare", "add_to_cart",
        "begin_checkout", "purchase", "email_open", "email_click", "review_submitted", "share",
        "referral_sent", "survey_response",
    }  # fmt: skip
    rules = parse_stage_rules(
        "stages:\n  awareness: [page_view]\n"
        "  advocacy: [{event: survey_response, scale: 5, min_score: 5}]\n"
        "conversion: [order_placed]\n"
    )
    assert rules.event_types == {"page_view", "survey_response", "order_placed"}
