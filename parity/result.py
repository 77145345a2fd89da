"""Plain result data of a parity run, and the one policy that turns outcomes into verdicts.

Every caller (CLI, pytest plugin, ``eval``, ``doctor``, reports) reads results from here;
this module imports no orchestration and no framework.

A variant's :class:`Status`:

``pass``
    it ran and every tap is within budget;
``fail``
    it ran and a budget is broken;
``error``
    the runtime failed on its artifact (refused it at load, raised, crashed, timed out);
``n/a``
    it does not apply here (no Keras twin for this model, its framework is not installed,
    an artifact parity cannot make for this card): reported with the reason, never run.

The exit code of a run is 0 when every applicable variant passed (``n/a`` rows do not
fail a run unless ``strict``), 1 when any failed or errored.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from parity.compare import VariantVerdict
    from parity.exported import Artifact
    from parity.fixtures import Fixture
    from parity.taps import Tap
    from parity.variants import Variant
    from parity.zoo import ModelCard

Status = Literal["pass", "fail", "error", "n/a"]

PASS: Status = "pass"
FAIL: Status = "fail"
ERROR: Status = "error"
NOT_APPLICABLE: Status = "n/a"


@dataclasses.dataclass
class VariantResult:
    """One variant's outcome: its verdict, the error that stopped it, or why it does not apply.

    Attributes:
        variant: what ran.
        verdict: per-tap verdict (``None`` when it errored or did not apply).
        artifact: the artifact it ran on, when there is one.
        seconds: wall time of the check.
        error: the runtime's message when it failed to run.
        mode: ``"live"`` (vs torch now) or ``"golden"`` (vs the stored goldens).
        reason: why the variant does not apply (status ``n/a``).
        executed: the precision it actually ran in, where the runtime says (its declared
            class is ``variant.precision``).
        located: tap -> the tensor it was read from in the artifact, where the runner says.
    """

    variant: Variant
    verdict: VariantVerdict | None
    artifact: Artifact | None
    seconds: float
    error: str | None = None
    mode: str = "live"
    reason: str | None = None
    executed: str | None = None
    located: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def not_applicable(cls, variant: Variant, reason: str, mode: str = "live") -> VariantResult:
        """A row for a variant that cannot run here, with the reason."""
        return cls(variant, None, None, 0.0, mode=mode, reason=reason)

    @classmethod
    def failed_to_run(
        cls, variant: Variant, error: str, mode: str = "live", artifact: Artifact | None = None,
        seconds: float = 0.0,
    ) -> VariantResult:  # fmt: skip
        """A runtime that failed on its artifact: a failed variant (exit 1)."""
        return cls(variant, None, artifact, seconds, error=error, mode=mode)

    @property
    def status(self) -> Status:
        if self.reason is not None and self.error is None and self.verdict is None:
            return NOT_APPLICABLE
        if self.error is not None or self.verdict is None:
            return ERROR
        return PASS if self.verdict.passed else FAIL

    @property
    def applicable(self) -> bool:
        return self.status != NOT_APPLICABLE

    @property
    def passed(self) -> bool:
        """Ran and within budget (an ``n/a`` row has not passed; see :func:`run_passed`)."""
        return self.status == PASS


def run_passed(results: list[VariantResult], strict: bool = False) -> bool:
    """The one failure policy: every applicable variant passed; with ``strict``, no ``n/a``."""
    if strict and any(r.status == NOT_APPLICABLE for r in results):
        return False
    return all(r.status in (PASS, NOT_APPLICABLE) for r in results)


@dataclasses.dataclass
class ParityReport:
    """Everything a report shows about one model's run."""

    card: ModelCard
    weights_source: str
    weights_sha256: str
    input_sha256: str
    fixtures: list[Fixture]
    taps: tuple[Tap, ...]
    tolerances: str
    results: list[VariantResult]
    reference_seconds: float
    wall_seconds: float = 0.0
    #: "cached" (no torch ran) or "computed" ("" when no reference was needed).
    reference_source: str = ""
    strict: bool = False
    #: The config file the run read (or that there was none), for the report header.
    config: str = ""
    #: False when no tolerance rule names this model: it ran against the default budgets.
    measured_budgets: bool = True

    @property
    def passed(self) -> bool:
        return run_passed(self.results, self.strict)

    @property
    def image_names(self) -> list[str]:
        return [f.name for f in self.fixtures]
