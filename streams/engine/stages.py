"""Stage rules: which events move a session along the buyer's journey (SPEC section 2).

Rules come from a YAML file (defaults in ``schemas/stages.yaml``, mirrored by
``StageRules.default()``); a store's file replaces them entirely. The file is read through
YAML's node API so that every problem is reported with its file and line. Rules are
compiled to plain dict lookups so classifying an event costs one ``dict.get``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Protocol

import yaml

from streams.engine.rows import (
    ALL_STAGES,
    FUNNEL_RANK,
    FUNNEL_STAGES,
    STAGE_ADVOCACY,
    STAGE_RETENTION,
)
from streams.errors import ConfigError

#: Bits returned by ``StageRules.classify`` beside the funnel rank.
FLAG_RETENTION = 1
FLAG_ADVOCACY = 2
FLAG_CONVERSION = 4

#: The defaults as shipped: package data (``streams/schemas`` links to ``schemas/``).
DEFAULT_RULES_PATH = resources.files("streams").joinpath("schemas", "stages.yaml")


class Classifiable(Protocol):
    """What the rules read of an event (an ``Event`` or a visitor state's ``StoredEvent``)."""

    @property
    def event_type(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def score(self) -> float | None: ...
    @property
    def scale(self) -> int | None: ...


_RULE_KEYS = frozenset({"event", "scale", "min_score", "max_score"})
_TOP_KEYS = frozenset({"funnel", "stages", "conversion"})


@dataclass(frozen=True, slots=True)
class StageRule:
    """One rule: an event type, optionally restricted to a survey scale and a score range."""

    stage: str
    event: str
    scale: int | None = None
    min_score: float | None = None
    max_score: float | None = None

    def matches(self, event: Classifiable) -> bool:
        """Whether ``event`` (already known to be of type ``self.event``) satisfies the rule."""
        if self.scale is not None and event.scale != self.scale:
            return False
        if self.min_score is not None and (event.score is None or event.score < self.min_score):
            return False
        return not (
            self.max_score is not None and (event.score is None or event.score > self.max_score)
        )


class StageRules:
    """Compiled stage rules: ``classify(event)`` gives (funnel rank, flag bits).

    The rank is 1 (awareness) unless the event type is listed under consideration (2) or
    purchase (3). Flags: ``FLAG_RETENTION`` (a retention event carrying a user_id),
    ``FLAG_ADVOCACY``, ``FLAG_CONVERSION`` (an event that completes a purchase).
    """

    __slots__ = ("_conditional", "_simple", "conversion", "event_types", "rules")

    def __init__(self, rules: Iterable[StageRule], conversion: Iterable[str]) -> None:
        """Compile ``rules`` and the conversion event types into lookup tables."""
        self.rules: tuple[StageRule, ...] = tuple(rules)
        self.conversion: frozenset[str] = frozenset(conversion)
        #: Every event type the rules name (a rule's event or a conversion event): the
        #: fixed set a metric label may take from event data (``journey_events_total``).
        self.event_types: frozenset[str] = frozenset(r.event for r in self.rules) | self.conversion
        simple: dict[str, tuple[int, int]] = {t: (1, FLAG_CONVERSION) for t in self.conversion}
        conditional: dict[str, list[StageRule]] = {}
        for rule in self.rules:
            if rule.scale is None and rule.min_score is None and rule.max_score is None:
                rank, flags = simple.get(rule.event, (1, 0))
                simple[rule.event] = _apply(rule.stage, rank, flags)
            else:
                conditional.setdefault(rule.event, []).append(rule)
        self._simple = simple
        self._conditional = {k: tuple(v) for k, v in conditional.items()}

    @classmethod
    def default(cls) -> StageRules:
        """The SPEC section 2 defaults (identical to ``schemas/stages.yaml``)."""
        rules = [StageRule(stage, event) for stage, events in _DEFAULTS.items() for event in events]
        rules.append(StageRule(STAGE_ADVOCACY, "survey_response", scale=10, min_score=9))
        return cls(rules, ["purchase"])

    def classify(self, event: Classifiable) -> tuple[int, int]:
        """(funnel rank 1-3, flag bits) that ``event`` contributes to its session."""
        rank, flags = self._simple.get(event.event_type, (1, 0))
        conditional = self._conditional.get(event.event_type)
        if conditional is not None:
            for rule in conditional:
                if rule.matches(event):
                    rank, flags = _apply(rule.stage, rank, flags)
        if flags & FLAG_RETENTION and not event.user_id:
            flags &= ~FLAG_RETENTION  # only a known customer's email activity is retention
        return rank, flags

    def __eq__(self, other: object) -> bool:
        """Rules are equal when they hold the same rules and conversion types."""
        if not isinstance(other, StageRules):
            return NotImplemented
        return set(self.rules) == set(other.rules) and self.conversion == other.conversion

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        """A short summary for logs."""
        return f"StageRules({len(self.rules)} rules, conversion={sorted(self.conversion)})"


def _apply(stage: str, rank: int, flags: int) -> tuple[int, int]:
    if stage == STAGE_RETENTION:
        return rank, flags | FLAG_RETENTION
    if stage == STAGE_ADVOCACY:
        return rank, flags | FLAG_ADVOCACY
    return max(rank, FUNNEL_RANK[stage]), flags


_DEFAULTS: dict[str, Sequence[str]] = {
    "consideration": ("product_view", "search", "add_to_wishlist", "product_compare"),
    "purchase": ("add_to_cart", "begin_checkout", "purchase"),
    "retention": ("email_open", "email_click"),
    "advocacy": ("review_submitted", "share", "referral_sent"),
}


def load_stage_rules(path: str | Path | Traversable | None = None) -> StageRules:
    """Read a store's rules file (``None`` or ``""``: the shipped defaults).

    Raises ``ConfigError`` naming the file, the line and the problem.
    """
    if not path:
        return StageRules.default()
    file = Path(path) if isinstance(path, str) else path
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"stage rules {file}: cannot read the file ({exc})") from exc
    return parse_stage_rules(text, str(file))


def parse_stage_rules(text: str, source: str = "<rules>") -> StageRules:
    """Parse rules YAML text; ``source`` names the file in error messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ConfigError(f"{source}:{line}: not valid YAML ({exc.problem})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
    return _Reader(source).read(root)


class _Reader:
    """Walks the composed YAML node tree, raising ``ConfigError`` with line numbers."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, node: yaml.Node | None, problem: str) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ConfigError(f"{self.source}:{line}: {problem}")

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            name = self.string(key, f"a key of {what}")
            if name in out:
                raise self.fail(key, f"duplicate key {name!r} in {what}")
            out[name] = (key, value)
        return out

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return list(node.value)

    def string(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            raise self.fail(node, f"{what} must be a text value")
        if not node.value.strip():
            raise self.fail(node, f"{what} must not be empty")
        return str(node.value)

    def number(self, node: yaml.Node, what: str, integer: bool = False) -> float:
        tags = ("tag:yaml.org,2002:int",) if integer else (
            "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")  # fmt: skip
        if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
            raise self.fail(node, f"{what} must be {'a whole number' if integer else 'a number'}")
        value = yaml.safe_load(node.value)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail(node, f"{what} must be a number")
        return value

    def read(self, root: yaml.Node | None) -> StageRules:
        if root is None:
            raise ConfigError(f"{self.source}:1: the rules file is empty")
        top = self.mapping(root, "the rules file")
        for name, (key, _) in top.items():
            if name not in _TOP_KEYS:
                raise self.fail(
                    key, f"unknown key {name!r} (expected: {', '.join(sorted(_TOP_KEYS))})"
                )
        if "funnel" in top:
            node = top["funnel"][1]
            funnel = tuple(self.string(n, "a funnel stage") for n in self.sequence(node, "funnel"))
            if funnel != FUNNEL_STAGES:
                raise self.fail(node, f"funnel must be {', '.join(FUNNEL_STAGES)} in this order")
        if "stages" not in top:
            raise self.fail(root, "missing key 'stages'")
        rules: list[StageRule] = []
        funnel_owner: dict[str, str] = {}
        for stage, (key, value) in self.mapping(top["stages"][1], "stages").items():
            if stage not in ALL_STAGES:
                raise self.fail(key, f"unknown stage {stage!r} (known: {', '.join(ALL_STAGES)})")
            seen: set[tuple[object, ...]] = set()
            for item in self.sequence(value, f"stage {stage!r}"):
                rule = self.rule(stage, item)
                ident = (rule.event, rule.scale, rule.min_score, rule.max_score)
                if ident in seen:
                    raise self.fail(item, f"event {rule.event!r} is listed twice under {stage!r}")
                seen.add(ident)
                if stage in FUNNEL_RANK:
                    other = funnel_owner.get(rule.event)
                    if other is not None and other != stage:
                        raise self.fail(
                            item,
                            f"event {rule.event!r} is in funnel stages {other!r} and {stage!r};"
                            " an event type may reach one funnel stage only",
                        )
                    funnel_owner[rule.event] = stage
                rules.append(rule)
        conversion: list[str] = ["purchase"]
        if "conversion" in top:
            node = top["conversion"][1]
            conversion = [
                self.string(n, "a conversion event") for n in self.sequence(node, "conversion")
            ]
        return StageRules(rules, conversion)

    def rule(self, stage: str, node: yaml.Node) -> StageRule:
        if isinstance(node, yaml.ScalarNode):
            return StageRule(stage, self.string(node, f"an event under {stage!r}"))
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"an entry under {stage!r} must be an event name or a mapping")
        fields = self.mapping(node, f"a rule under {stage!r}")
        for name, (key, _) in fields.items():
            if name not in _RULE_KEYS:
                raise self.fail(
                    key,
                    f"unknown key {name!r} in a rule (expected: {', '.join(sorted(_RULE_KEYS))})",
                )
        if "event" not in fields:
            raise self.fail(node, f"a rule under {stage!r} needs an 'event' key")
        scale = min_score = max_score = None
        if "scale" in fields:
            scale = int(self.number(fields["scale"][1], "scale", integer=True))
            if scale not in (5, 10):
                raise self.fail(fields["scale"][1], "scale must be 5 (CSAT) or 10 (NPS)")
        if "min_score" in fields:
            min_score = float(self.number(fields["min_score"][1], "min_score"))
        if "max_score" in fields:
            max_score = float(self.number(fields["max_score"][1], "max_score"))
        event = self.string(fields["event"][1], "event")
        return StageRule(stage, event, scale, min_score, max_score)


def rules_summary(rules: StageRules) -> Mapping[str, list[str]]:
    """Event types per stage, for ``journey`` help output and logs."""
    out: dict[str, list[str]] = {stage: [] for stage in ALL_STAGES}
    for rule in rules.rules:
        out[rule.stage].append(rule.event)
    return out
