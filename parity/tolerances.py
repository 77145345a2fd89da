"""The tolerance policy: budgets as data (a TOML file, see ``fixtures/tolerances.toml``).

The most specific matching ``model/variant/tap`` key wins, metric by metric, among the
rules of the variant's precision class (:func:`rule_classes`): an fp32 rule never judges a
bf16 run. :mod:`parity.compare` judges a tap's metrics against the budget resolved here.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

from parity.backends import PRECISION_CLASSES, precision_of, variants
from parity.errors import ToleranceError
from parity.paths import bundled_dir
from parity.schema import (
    ConfigError,
    Field,
    check,
    list_of,
    number,
    read_config,
    string,
    table,
)

# Budget keys and how each is judged: "max" means the metric must be <= the budget,
# "min" means >= . The metric a budget reads is the key without its min_/max_ prefix
# for min_ keys, and the key itself for max_ keys.
BUDGET_KEYS: dict[str, tuple[str, str]] = {
    "max_abs_norm": ("max_abs_norm", "max"),
    "max_rel": ("max_rel", "max"),
    "min_cosine": ("cosine", "min"),
    "min_sqnr_db": ("sqnr_db", "min"),
    "min_top1_agreement": ("top1_agreement", "min"),
    "min_top5_overlap": ("top5_overlap", "min"),
}

_FRACTION = {"gt": 0.0, "le": 1.0, "why": "a budget of 0 or less cannot fail, above 1 cannot pass"}
_MAX = {"ge": 0.0, "why": "a negative maximum cannot pass"}

#: What a ``[budget."model/variant/tap"]`` table may hold: every budget finite and able
#: to fail (a cosine <= 0 or a top-1 agreement of 0 passes anything).
BUDGET_SCHEMA: dict[str, Field] = {
    "notes": string(),
    "precision": list_of(string(choices=PRECISION_CLASSES), nonempty=True),
    "variants": list_of(string(), nonempty=True),
    "max_abs_norm": number(**_MAX),
    "max_rel": number(**_MAX),
    "min_cosine": number(**_FRACTION),
    "min_sqnr_db": number(),  # may be negative: int8 on these weights measures -0.5 dB
    "min_top1_agreement": number(**_FRACTION),
    "min_top5_overlap": number(**_FRACTION),
}
#: ``extends``: ``"bundled"`` or a path (relative to the file) whose rules come first.
TOLERANCE_SCHEMA = table({"extends": string(), "budget": table(values=table(BUDGET_SCHEMA))})


def rule_classes(
    pattern: str, precision: Sequence[str] = (), named: Sequence[str] = ()
) -> frozenset[str]:
    """The precision classes a ``model/variant/tap`` rule judges.

    Its ``precision`` list when it has one; else, with a ``variants`` list (``named``), their
    classes; else ``fp32`` when its variant part is ``*`` (a model-wide or tap-wide default
    is an fp32 budget); else the class of the registered variants it names (every class
    when it names none: a name parity does not know).
    Raises :class:`ToleranceError` when a rule without ``precision`` names variants of
    several classes: one budget would pool their errors.
    """
    if precision:
        return frozenset(precision)
    glob = pattern.split("/")[1]
    if glob == "*" and not named:
        return frozenset({"fp32"})
    found = {
        v.name: v.precision
        for v in variants().values()
        if (v.name in named if named else fnmatch.fnmatchcase(v.name, glob))
    }
    classes = frozenset(found.values())
    if len(classes) > 1:
        listed = "; ".join(
            f"{c}: {', '.join(n for n, k in found.items() if k == c)}" for c in sorted(classes)
        )
        raise ToleranceError(
            f"budget {pattern!r} names variants of several precision classes ({listed}); "
            f"give it precision = [...] or name one class's variants"
        )
    return classes or frozenset(PRECISION_CLASSES)


@dataclasses.dataclass(frozen=True)
class BudgetRule:
    """One table of the tolerance file: a ``model/variant/tap`` glob and its budgets.

    ``precision``: the classes it judges (empty: inferred, see :func:`rule_classes`).
    ``variants``: when given, the only variants it judges (``parity budgets`` writes the
    variants it measured: a rule never judges a variant nobody measured).
    """

    pattern: str
    budgets: Mapping[str, float]
    notes: str = ""
    precision: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()

    @functools.cached_property
    def classes(self) -> frozenset[str]:
        return rule_classes(self.pattern, self.precision, self.variants)

    @property
    def parts(self) -> tuple[str, str, str]:
        model, variant, tap = self.pattern.split("/")
        return model, variant, tap

    def matches(self, model: str, variant: str, tap: str) -> bool:
        if self.variants and variant not in self.variants:
            return False
        return all(
            fnmatch.fnmatchcase(value, glob)
            for value, glob in zip((model, variant, tap), self.parts, strict=True)
        )

    @property
    def specificity(self) -> int:
        """Tap beats variant beats model; a literal part beats a glob."""
        weights = (1, 2, 4)
        return sum(w for w, part in zip(weights, self.parts, strict=True) if "*" not in part)


@dataclasses.dataclass(frozen=True)
class Budget:
    """The budgets that apply to one tap, with the rule each came from.

    ``missing``: why no rule of the variant's precision class applies (the tap then fails).
    """

    limits: Mapping[str, float]
    sources: Mapping[str, str]
    precision: str = "fp32"
    missing: str = ""


def _unbudgeted(model: str, variant: str, precision: str) -> str:
    return (
        f"no {precision}-class budget for {model}/{variant} (an fp32 budget never judges "
        f"{precision}); measure one: parity budgets --model {model} -r {variant} --write"
    )


def _base_file(path: Path, extends: str) -> Path:
    """The file a tolerance file extends: the bundled one, or a path relative to it."""
    if extends == "bundled":
        return bundled_dir("fixtures") / "tolerances.toml"
    base = Path(path).parent / extends
    if base.resolve() == Path(path).resolve():
        raise ToleranceError(f"{path}: 'extends' names the file itself")
    return base


class TolerancePolicy:
    """Budgets by ``model/variant/tap`` key; the most specific key wins per metric."""

    def __init__(self, rules: Sequence[BudgetRule], source: str = "<memory>") -> None:
        self.rules = list(rules)
        self.source = source

    @classmethod
    def load(cls, path: Path) -> TolerancePolicy:
        """Read and validate a tolerance TOML file (``[budget."model/variant/tap"]`` tables)."""
        data = read_config(path, "tolerance file", ToleranceError)
        try:
            check(data, TOLERANCE_SCHEMA, path)
        except ConfigError as exc:
            raise ToleranceError(str(exc)) from None
        rules = []
        if "extends" in data:
            rules.extend(TolerancePolicy.load(_base_file(path, data["extends"])).rules)
        for pattern, rule in data.get("budget", {}).items():
            if pattern.count("/") != 2:
                raise ToleranceError(f"{path}: budget key {pattern!r} must be 'model/variant/tap'")
            budgets = {k: float(v) for k, v in rule.items() if k in BUDGET_KEYS}
            made = BudgetRule(
                pattern, budgets, str(rule.get("notes", "")), tuple(rule.get("precision", ())),
                tuple(rule.get("variants", ())),
            )  # fmt: skip
            try:
                _ = made.classes
            except ToleranceError as exc:
                raise ToleranceError(f"{path}: {exc}") from None
            rules.append(made)
        if not rules:
            raise ToleranceError(f'{path}: no [budget."model/variant/tap"] tables')
        return cls(rules, source=str(path))

    def measured_for(self, model: str) -> bool:
        """Whether a rule names ``model`` (not only the ``*`` default) in this file."""
        return any(r.parts[0] != "*" and fnmatch.fnmatchcase(model, r.parts[0]) for r in self.rules)

    def budget(self, model: str, variant: str, tap: str, precision: str | None = None) -> Budget:
        """Resolve every budget key for one tap, from the rules of ``precision``'s class.

        ``precision``: the variant's class (default: the registered variant's, see
        :func:`~parity.backends.precision_of`). No rule of a class other than fp32 is a
        budget that fails every tap, saying so (fp32 needs a ``*/*/*`` default: an error).
        """
        precision = precision or precision_of(variant)
        limits: dict[str, float] = {}
        sources: dict[str, str] = {}
        ranked = sorted(
            (r for r in self.rules if precision in r.classes and r.matches(model, variant, tap)),
            key=lambda r: r.specificity,
        )
        for rule in ranked:  # later (more specific) rules overwrite earlier ones
            for key, value in rule.budgets.items():
                limits[key] = value
                sources[key] = rule.pattern
        if not limits and precision == "fp32":
            raise ToleranceError(
                f"{self.source}: no budget matches {model}/{variant}/{tap}; add a '*/*/*' default"
            )
        if not limits:
            return Budget({}, {}, precision, missing=_unbudgeted(model, variant, precision))
        return Budget(limits, sources, precision)
