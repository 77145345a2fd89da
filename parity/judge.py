"""The judge stage: each variant's outputs against the torch reference now (live) and the
stored goldens, in one order, as immutable results.

The CLI's :func:`parity.harness.run_parity` and the pytest plugin's ``--parity-report``
both judge through :func:`judge`; a variant's own check (its taps against the budgets) is
the session's (:meth:`parity.session.Session.check`, :meth:`~parity.session.Session.
check_golden`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal, Protocol

from parity.errors import ParityError
from parity.result import VariantResult
from parity.variants import Variant


class Judged(Protocol):
    """What the stage needs of a model under test (a :class:`parity.session.Session`)."""

    def check(self, variant: Variant) -> VariantResult: ...

    def check_golden(self, variant: Variant) -> VariantResult: ...

    def forget(self, variant: Variant) -> None: ...


@dataclasses.dataclass(frozen=True)
class Judging:
    """What to judge.

    Attributes:
        variants: in report order (the torch reference is judged against the goldens only).
        live: each variant but the reference vs torch now.
        golden: each variant vs the stored goldens.
        failures: variant name -> why it could not run, known before judging (its rows
            fail with that message).
        golden_errors: a :class:`~parity.errors.ParityError` of a golden check (stale or
            missing goldens) is raised (the CLI: bad input, exit 2) or becomes the variant's
            failed row (the plugin, whose report keeps the other variants).
    """

    variants: tuple[Variant, ...]
    live: bool
    golden: bool
    failures: Mapping[str, str] = dataclasses.field(default_factory=dict)
    golden_errors: Literal["raise", "row"] = "raise"


def judge(session: Judged, judging: Judging) -> tuple[VariantResult, ...]:
    """One result per variant and mode (live before golden), each variant's outputs dropped
    once judged."""
    results: list[VariantResult] = []
    for variant in judging.variants:
        modes = [m for m, wanted in (("live", judging.live and not variant.reference),
                                     ("golden", judging.golden)) if wanted]  # fmt: skip
        error = judging.failures.get(variant.name)
        for mode in modes:
            if error is not None:
                results.append(VariantResult.failed_to_run(variant, error, mode))
            elif mode == "live":
                results.append(session.check(variant))
            else:
                try:
                    results.append(session.check_golden(variant))
                except ParityError as exc:
                    if judging.golden_errors == "raise":
                        raise
                    results.append(VariantResult.failed_to_run(variant, str(exc), mode))
        session.forget(variant)  # judged: a report needs the verdicts, not the taps
    return tuple(results)
