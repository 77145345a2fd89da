"""One generated test: judge one image (or the whole set's rates) and, when it fails,
say what moved and what to do.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest

from parity.errors import ParityError, RuntimeFailure
from parity.pytest_plugin.options import SHIPPED_INDEX, ParityCase
from parity.pytest_plugin.state import RunFailed
from parity.pytest_plugin.verdicts import image_verdict, rejudged, tap_table_lines

if TYPE_CHECKING:
    import numpy as np

    from parity.harness import Session
    from parity.pytest_plugin.state import ParityPlugin
    from parity.variants import Variant


def check(plugin: ParityPlugin, case: ParityCase) -> None:
    """Judge one image; ``pytest.fail`` with a readable message if it does not pass."""
    from parity.variants import VARIANTS

    if case.index == SHIPPED_INDEX:
        check_shipped(plugin, case)
        return
    variant = VARIANTS[case.variant]
    if case.model in plugin.rewritten:  # like --force-regen: never green while regenerating
        pytest.fail(
            f"the goldens of {case.card} were rewritten by --parity-update-goldens in this "
            "run (what moved is printed above); rerun without it to check against them",
            pytrace=False,
        )
    session, obtained, message = _prepare(plugin, case, variant)
    if message is not None:  # failing outside the except block: no chained exception
        pytest.fail(message, pytrace=False)
    assert session is not None and obtained is not None
    store = session.goldens
    modes = ["golden"]
    if plugin.options.live and not variant.reference:
        modes.append("live")
    if case.index < 0:
        check_rates(plugin, case, session, variant, modes)
        return
    verdicts = [(mode, image_verdict(session, variant, case.index, mode)) for mode in modes]
    failed = [(mode, v) for mode, v in verdicts if not v.passed]
    if not failed:
        return
    mode, verdict = failed[0]
    first = verdict.first_failure
    assert first is not None
    sections = [
        f"{case.variant} vs {'golden' if mode == 'golden' else 'torch'} on "
        f"'{case.fixture}': first divergent tap '{first.tap.name}' "
        f"({'; '.join(first.failures)})"
    ]
    for mode, verdict in failed:
        against = "its golden" if mode == "golden" else "torch now (live)"
        sections.append(
            f"{case.card} / {case.variant} vs {against}, image '{case.fixture}':\n"
            + "\n".join("  " + line for line in tap_table_lines(verdict))
            + f"\n{verdict.explain([case.fixture])}"
        )
    try:
        written = str(store.write_obtained(case.fixture, case.variant, obtained, case.index))
    except OSError as exc:  # e.g. goldens in a read-only install
        written = f"not written ({exc})"
    sections.append(f"obtained arrays: {written}\ngolden: {store.npz_path(case.fixture)}")
    sections.append(advice(plugin, case, session, dict(failed)))
    pytest.fail("\n\n".join(sections), pytrace=False)


def check_rates(
    plugin: ParityPlugin, case: ParityCase, session: Session, variant: Variant, modes: Sequence[str]
) -> None:
    """The whole-set test: budgets that are rates over the images (top-1 agreement)."""
    from parity.compare import merge_verdicts
    from parity.judge import image_verdict as judged_image

    names = [f.name for f in session.fixtures]
    sections = []
    failed = {}
    for mode in modes:
        per_image = [judged_image(session, variant, i, mode) for i in range(len(names))]
        merged = rejudged(merge_verdicts(per_image, session.policy, case.card), rates=True)
        if merged.passed:
            continue
        failed[mode] = merged
        first = merged.first_failure
        assert first is not None
        against = "its golden" if mode == "golden" else "torch now (live)"
        lines = [
            f"{case.card} / {case.variant} vs {against}, over {len(names)} images: "
            f"tap '{first.tap.name}': {'; '.join(first.failures)}"
        ]
        index = [t.tap.name for t in per_image[0].taps].index(first.tap.name)
        for key, label in (("top1_agreement", "top-1"), ("top5_overlap", "top-5")):
            if any(key in failure for failure in first.failures):
                bad = [
                    f"{name} ({v.taps[index].metrics.get(key):.2g})"
                    for name, v in zip(names, per_image, strict=True)
                    if (v.taps[index].metrics.get(key) or 0.0) < 1.0
                ]
                lines.append(f"  images where {label} differs: {', '.join(bad)}")
        sections.append("\n".join(lines))
    if not sections:
        return
    sections.append(
        "(the per-image tests judge every other budget; this one judges the budgets "
        "that are rates over the fixture set)"
    )
    sections.append(advice(plugin, case, session, failed))
    pytest.fail("\n\n".join(sections), pytrace=False)


def _prepare(
    plugin: ParityPlugin, case: ParityCase, variant: Variant
) -> tuple[Session | None, dict[str, np.ndarray] | None, str | None]:
    """Session (goldens checked fresh) and outputs, or the failure message."""
    from parity.golden import MissingGoldenError, StaleGoldenError
    from parity.plan import plan

    ran = plugin.ran.setdefault(case.model, [])  # what --parity-report covers
    if variant not in ran:
        ran.append(variant)
    try:
        session = plugin.session(case.model)
        reason = plan(session.card, [variant]).reasons.get(variant.name)
        if reason is not None:  # a row in the report, a skip here (pytest.skip raises)
            pytest.skip(f"n/a: {reason}")
        # Outputs first: the workers hand over the weights' hash the goldens are checked by.
        obtained = plugin.outputs(case.model, variant, case.id)
        if plugin.options.live and not variant.reference:
            _ = session.prepared_reference  # RuntimeFailure: the torch worker died
        _ = session.goldens  # stale or missing goldens fail here, with their message
        return session, obtained, None
    except MissingGoldenError as exc:
        return None, None, f"{exc}\n\n{accept_text(plugin, case, 'to create them')}"
    except StaleGoldenError as exc:
        return None, None, f"{exc}\n\n{accept_text(plugin, case)}"
    except (ParityError, RunFailed, RuntimeFailure) as exc:
        return None, None, str(exc)


def advice(plugin: ParityPlugin, case: ParityCase, session: Session, failed: dict[str, Any]) -> str:
    """What to do: accept a moved reference, or widen a budget for a moved runtime."""
    from parity.judge import image_verdict as judged_image
    from parity.variants import REFERENCE, VARIANTS

    lines = []
    tolerances = session.policy.source
    if "golden" in failed:
        torch_moved = True
        if case.variant != REFERENCE:
            indices = [case.index] if case.index >= 0 else range(len(session.fixtures))
            try:
                torch = VARIANTS[REFERENCE]
                torch_moved = not all(
                    judged_image(session, torch, i, "golden").passed for i in indices
                )
            except (ParityError, RuntimeFailure):  # no torch here: cannot tell, offer both
                torch_moved = True
        if case.variant == REFERENCE:
            lines.append(
                "the torch reference itself moved away from the golden (weights, "
                "torch/torchvision/numpy/Pillow versions or preprocessing code)."
            )
        elif torch_moved:
            lines.append(
                "torch moved away from this golden too: the golden is out of date, "
                "not only this runtime."
            )
        if torch_moved:
            lines.append(accept_text(plugin, case))
        else:
            first = failed["golden"].first_failure
            lines.append(
                f"torch still matches this golden: the drift is in {case.variant} (its "
                "export or runtime), so regenerating goldens would not change it. If it "
                f'is acceptable, widen [budget."{case.card}/{case.variant}/'
                f'{first.tap.name}"] in {tolerances}.'
            )
    if "live" in failed:
        first = failed["live"].first_failure
        lines.append(
            f"{case.variant} disagrees with torch now; goldens play no part in that. If "
            f'acceptable, widen [budget."{case.card}/{case.variant}/{first.tap.name}"] '
            f"in {tolerances}."
        )
    return "\n".join(lines)


def accept_text(
    plugin: ParityPlugin, case: ParityCase, lead: str = "to accept the change if intended"
) -> str:
    """The exact commands that regenerate this model's goldens from torch."""
    argv = ["pytest", "--parity-models", case.model, "--parity-runtimes", case.variant]
    for flag, value in (
        ("--parity-fixtures", plugin.options.fixtures),
        ("--parity-goldens", plugin.options.goldens),
        ("--parity-tolerances", plugin.options.tolerances),
    ):
        if value is not None:
            argv += [flag, str(value)]
    argv.append("--parity-update-goldens")
    text = f"{lead}:\n  {shlex.join(argv)}"
    if plugin.options.fixtures is None and plugin.options.goldens is None:
        text += f"\n  (or: {shlex.join(['parity', 'update-goldens', '--model', case.model])})"
    return text


def check_shipped(plugin: ParityPlugin, case: ParityCase) -> None:
    """A file the project ships vs torch now and vs the goldens, as ``parity check`` does
    (its taps are located with torch); its results go into ``--parity-report``."""
    from parity.config import load_gate_config
    from parity.harness import RunConfig, run_parity

    (shipped,) = [a for a in load_gate_config().shipped(case.card) if str(a.path) == case.fixture]
    config = RunConfig(
        model=case.model, fixtures=plugin.options.fixtures, tolerances=plugin.options.tolerances,
        goldens=plugin.options.goldens, artifact=shipped.path, artifact_runtime=shipped.runtime,
        tap_map=shipped.taps, input_layout=shipped.layout,
    )  # fmt: skip
    try:
        report = run_parity(config, modes=("golden", "live"))
    except ParityError as exc:
        pytest.fail(f"{shipped.path}: {exc}", pytrace=False)
    plugin.shipped.append(report)
    for result in report.results:  # vs torch, then vs the goldens
        where = f"{shipped.path}{'' if result.mode == 'live' else ' (vs the goldens)'}"
        if result.error is not None:
            pytest.fail(f"{where}: {result.error}", pytrace=False)
        assert result.verdict is not None
        if not result.passed:
            pytest.fail(f"{where}: {result.verdict.explain()}", pytrace=False)
