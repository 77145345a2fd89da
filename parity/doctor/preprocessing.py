"""``preprocessing``: a user's pipeline against the card's spec, explained by search.

The user's tensors are compared with the card's recipe on the same images; if they
differ, :func:`parity.doctor.search.search` finds the smallest combination of named
factors that reproduces them (to within half an 8-bit step), and each factor comes with
the line of code that fixes it. When nothing reproduces them, the finding says
"unexplained", with per-channel statistics against the card's and the closest
candidates with their residuals. The torch model shows what the difference costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.doctor.effect import Effect, ModelJudge
from parity.doctor.findings import OK, PROBLEM, Finding
from parity.doctor.inputs import UserPreprocess, as_path_function
from parity.doctor.recipe import Recipe, Renderer, half_level_tolerance
from parity.doctor.search import MAX_FACTORS, Change, Scored, base_recipe, search
from parity.errors import ParityError
from parity.tolerances import TolerancePolicy
from parity.zoo import ModelCard

#: Max abs difference (tensor units) under which two preprocessings are "the same".
PREPROCESS_ATOL = 1e-4

_LAYOUT = Change(
    "layout", "layout NHWC", "transpose each image to CHW: array.transpose(2, 0, 1)", lambda r: r
)


def _user_batch(user_fn: UserPreprocess, paths: Sequence[Path]) -> tuple[np.ndarray, bool]:
    """The user's tensors as one NCHW batch, and whether they came as NHWC."""
    tensors = []
    for path in paths:
        array = np.asarray(user_fn(path), dtype=np.float32)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3 or 3 not in (array.shape[0], array.shape[2]):
            raise ParityError(
                f"user preprocessing returned shape {array.shape} for {path}; expected one "
                "3-channel image as CHW or HWC (or 1xCHW / 1xHWC)"
            )
        tensors.append(array)
    shapes = {t.shape for t in tensors}
    if len(shapes) > 1:
        raise ParityError(f"user preprocessing returned different shapes {sorted(shapes)}")
    batch = np.stack(tensors)
    nhwc = batch.shape[3] == 3 and batch.shape[1] != 3
    return (np.ascontiguousarray(batch.transpose(0, 3, 1, 2)) if nhwc else batch), nhwc


def _channel_stats(batch: np.ndarray) -> dict[str, list[float]]:
    flat = batch.transpose(1, 0, 2, 3).reshape(batch.shape[1], -1)
    return {
        key: [round(float(v), 4) for v in fn(flat, axis=1)]
        for key, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max))
    }


def _describe(scored: Scored) -> dict[str, Any]:
    return {
        "factors": [c.label for c in scored.changes],
        "max_abs_diff": scored.max_abs,
        "mean_abs_diff": scored.mean_abs,
    }


def diagnose_preprocessing(
    card: ModelCard,
    user_fn: Any,
    images: Sequence[Path],
    module: Any | None = None,
    judge: ModelJudge | None = None,
) -> Finding:
    """Attribute the difference between the user's tensors and the card's spec.

    Args:
        card: the model card (its ``preprocess`` is the reference).
        user_fn: the user's preprocessing in any form of :mod:`parity.doctor.inputs`.
        images: image files to compare on.
        module: the torch model; when given (or ``judge``), a difference is judged by its
            effect on the model's taps, and a residual the search leaves too.
        judge: the model with its taps and budgets (built from ``module`` when not given,
            with the bundled budgets and the weights taken as untrained).
    """
    paths = [Path(p) for p in images]
    if not paths:
        raise ParityError("no images to diagnose preprocessing on")
    if judge is None and module is not None:
        judge = ModelJudge(module, card.taps, _default_policy(), card.name, trained=False)
    path_fn, form = as_path_function(user_fn, card.preprocess, paths)
    user, nhwc = _user_batch(path_fn, paths)
    renderer = Renderer(paths)
    evidence: dict[str, Any] = {
        "images": [p.name for p in paths],
        "input_form": form,
        "user_shape": list(user.transpose(0, 2, 3, 1).shape if nhwc else user.shape),
        "user_range": [float(user.min()), float(user.max())],
    }
    card_recipe = base_recipe(card.preprocess, card.preprocess.input_hw)[0]
    expected = renderer.render(card_recipe)
    unrounded = None
    if card_recipe.spec.resize is not None:
        unrounded = renderer.render(card_recipe.replace(pixel_rounding="none"))
    tolerance = half_level_tolerance(card_recipe, renderer.pixels(card_recipe))
    same = (
        not nhwc
        and expected.shape == user.shape
        and any(
            float(np.abs(ref - user).max()) <= tolerance
            for ref in (expected, unrounded)
            if ref is not None
        )
    )
    effect, accept = None, None
    if judge is not None and not same:
        if unrounded is not None:
            judge.set_floor(expected, unrounded)
        effect = judge.effect(expected, user)
        evidence["effect_vs_card"] = effect.to_evidence()
        if effect.within and expected.shape == user.shape and not nhwc:
            return _negligible(card_recipe, expected, user, effect, evidence)

        def accept(candidate: Scored) -> bool:
            assert judge is not None
            return judge.effect(renderer.render(candidate.recipe), user).within

    if same:
        return Finding(
            "preprocessing",
            OK,
            "user preprocessing reproduces the card spec (max abs diff "
            f"{float(np.abs(expected - user).max()):.2e}; within half an 8-bit step of the "
            "card's tensors, or of them with the resized pixels kept as floats)",
            {**evidence, "max_abs_diff_vs_card": float(np.abs(expected - user).max())},
        )
    result = search(
        renderer, card.preprocess, user, extra=(_LAYOUT,) if nhwc else (), accept=accept
    )
    card_scored = result.card
    evidence.update(
        max_abs_diff_vs_card=card_scored.max_abs,
        mean_abs_diff_vs_card=card_scored.mean_abs,
        recipes_tried=result.tried,
    )
    explained = result.explained
    if explained is not None and not explained.changes:
        return Finding(
            "preprocessing",
            OK,
            "user preprocessing reproduces the card spec (max abs diff "
            f"{card_scored.max_abs:.2e} <= {explained.tolerance:.2e}, half an 8-bit step)",
            evidence,
        )
    if explained is not None:
        labels = [c.label for c in explained.changes]
        evidence.update(
            factors=labels,
            fixes=[c.fix for c in explained.changes],
            best_candidate=explained.label,
            best_candidate_max_abs_diff=explained.max_abs,
            best_candidate_mean_abs_diff=explained.mean_abs,
            tolerance=explained.tolerance,
        )
        how = (
            f"max abs diff {explained.max_abs:.2e} <= {explained.tolerance:.2e}"
            if explained.reproduces
            else f"the residual (max abs diff {explained.max_abs:.2e}, mean "
            f"{explained.mean_abs:.2e}) keeps every tap within its budget"
        )
        evidence["reproduced_by"] = "pixels" if explained.reproduces else "effect on the model"
        cause = (
            f"user preprocessing differs from the card spec by: {explained.label} "
            f"(reproduced: {how}; card spec {card_scored.max_abs:.2e})"
        )
        fix = "; ".join(dict.fromkeys(c.fix for c in explained.changes))
    else:
        cause, fix = _unexplained(renderer, result.card, result.closest, user, evidence)
    cause += _drift(effect, nhwc, len(paths), evidence)
    return Finding("preprocessing", PROBLEM, cause, evidence, fix)


def _default_policy() -> TolerancePolicy:
    from parity.runconfig import default_tolerances

    return TolerancePolicy.load(default_tolerances())


def _negligible(
    recipe: Recipe, expected: np.ndarray, user: np.ndarray, effect: Effect, evidence: dict[str, Any]
) -> Finding:
    """OK: the user's tensors differ from the card's, but no tap leaves its budget."""
    level = np.asarray(recipe.spec.std[:: -1 if recipe.spec.channel_order == "BGR" else 1])
    steps = np.abs(user - expected) / (recipe.spec.scale / level)[None, :, None, None]
    largest, share = float(steps.max()), float(np.mean(steps > 0.01))
    evidence.update(
        max_abs_diff_vs_card=float(np.abs(user - expected).max()),
        max_diff_8bit_steps=round(largest, 3),
        fraction_of_values_differing=round(share, 6),
    )
    return Finding(
        "preprocessing",
        OK,
        f"ok (differs by <={max(1, int(np.ceil(largest - 1e-3)))} LSB on "
        f"{share:.2%} of values): through the model {effect.summary(len(user))}",
        evidence,
    )


def _unexplained(
    renderer: Renderer,
    card: Scored,
    closest: Sequence[Scored],
    user: np.ndarray,
    evidence: dict[str, Any],
) -> tuple[str, str]:
    """Cause and fix when no combination of factors reproduces the user's tensors."""
    expected = renderer.render(card.recipe) if np.isfinite(card.max_abs) else None
    stats = _channel_stats(user)
    evidence["user_channel_stats"] = stats
    if expected is not None:
        evidence["card_channel_stats"] = _channel_stats(expected)
    evidence["closest_candidates"] = [_describe(s) for s in closest]
    evidence["explained"] = False
    best = closest[0] if closest else None
    cause = (
        f"unexplained: no combination of up to {MAX_FACTORS} known factors reproduces the "
        f"user's tensors (shape {tuple(user.shape[1:])} NCHW; card "
        f"max abs diff {card.max_abs:.3g}, mean {card.mean_abs:.3g}); per channel mean "
        f"{stats['mean']} std {stats['std']} range [{min(stats['min']):.3g}, "
        f"{max(stats['max']):.3g}]"
    )
    if expected is not None:
        card_stats = evidence["card_channel_stats"]
        cause += f" vs card mean {card_stats['mean']} std {card_stats['std']}"
    if best is not None and best.changes and best.mean_abs < 0.5 * card.mean_abs:
        share = 1.0 - best.mean_abs / card.mean_abs
        evidence["partial"] = {
            **_describe(best),
            "explains_fraction_of_mean_abs_diff": round(share, 3),
            "residual_worst_image": evidence["images"][int(np.argmax(best.per_image_max))],
        }
        cause += (
            f"; closest: {best.label} explains {share:.0%} of the mean abs difference, "
            f"unexplained residual max abs {best.max_abs:.3g}, mean {best.mean_abs:.3g}"
        )
        return cause, "; ".join(dict.fromkeys(c.fix for c in best.changes))
    if best is not None and best.changes:
        cause += f"; closest candidate {best.label} (mean abs diff {best.mean_abs:.3g})"
    return cause, ""


def _drift(effect: Effect | None, nhwc: bool, images: int, evidence: dict[str, Any]) -> str:
    """What the difference costs through the torch model (its taps vs the card's input)."""
    if nhwc:
        evidence["drift"] = (
            "user tensors are NHWC; the torch model takes NCHW, so this input is rejected "
            "or read with the wrong axes (transpose to NCHW)"
        )
        return ""
    if effect is None:
        return ""
    evidence["drift"] = effect.to_evidence()
    return f"; through the torch model: {effect.summary(images)}"
