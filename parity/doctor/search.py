"""Explain a user's tensors by search over the factors of a preprocessing recipe.

Each :class:`Change` is one choice users get wrong (resize filter, antialias, also in
cv2's fixed-point arithmetic, crop offset rounding, no crop, squash then crop, letterbox,
crop order, resize size and crop ratio, resize rounding, resized pixels floored, H/W
swapped, channel order, value range / normalisation incl. mean/std in the wrong unit and
per-image standardisation, mean/std channel order, EXIF, 16-bit and alpha handling), with
a label and the line of code that fixes it. A beam search changes one factor more per
level, from the card's recipe (unrounded when the user's pipeline keeps floats), and
stops at the first level where a recipe reproduces the user's tensors to within half an
8-bit step, or where the closest recipe's residual is one the model does not feel
(``accept``, judged by :mod:`parity.doctor.effect`): the smallest combination of named
factors. Nothing else means the difference is reported as unexplained, never as a label
that was not tested.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from parity.doctor.recipe import Recipe, Renderer, half_level_tolerance
from parity.preprocess import PreprocessSpec
from parity.zoo import PRESETS

#: Most factors a search combines before it calls the difference unexplained.
MAX_FACTORS = 4
#: Recipes carried from one search level to the next.
BEAM = 4
#: A residual is judged by its effect on the model only when it averages under this
#: many 8-bit steps (rounding, not a missing factor; saves a model run per level).
ACCEPT_MEAN_STEPS = 1.0


@dataclasses.dataclass(frozen=True)
class Change:
    """One factor set to one alternative value: a label and the fix for it."""

    factor: str
    label: str
    fix: str
    apply: Callable[[Recipe], Recipe]
    #: sets the output size itself (no separate "input size" factor then)
    sets_size: bool = False


@dataclasses.dataclass
class Scored:
    """A recipe, the changes that made it, and how far it is from the user's tensors."""

    recipe: Recipe
    changes: tuple[Change, ...]
    max_abs: float
    mean_abs: float
    tolerance: float
    per_image_max: list[float]

    @property
    def label(self) -> str:
        return " + ".join(c.label for c in self.changes) or "card spec"

    @property
    def reproduces(self) -> bool:
        return self.max_abs <= self.tolerance


def _norm_text(spec: PreprocessSpec) -> str:
    mean = ", ".join(f"{m:g}" for m in spec.mean)
    std = ", ".join(f"{s:g}" for s in spec.std)
    scale = "divide by 255" if np.isclose(spec.scale, 1 / 255) else f"multiply by {spec.scale:g}"
    return f"{scale}, then subtract mean ({mean}) and divide by std ({std}) per RGB channel"


def base_recipe(card_spec: PreprocessSpec, user_hw: tuple[int, int]) -> tuple[Recipe, list[Change]]:
    """The card's recipe at the user's output size, and the size change if there is one."""
    spec = card_spec.replace(layout="NCHW", dtype="float32")
    if user_hw == spec.input_hw or spec.crop is None or spec.resize is None:
        return Recipe(spec), []
    ratio = user_hw[0] / spec.crop[0]
    resize = tuple(round(r * ratio) for r in spec.resize)
    sized = Recipe(spec.replace(crop=user_hw, resize=resize))
    change = Change(
        "input_size",
        f"input size {user_hw[0]}x{user_hw[1]} (resize {'x'.join(map(str, resize))}, crop) "
        f"instead of {spec.input_hw[0]}x{spec.input_hw[1]}",
        f"resize to {'x'.join(map(str, spec.resize))} and centre-crop "
        f"{spec.input_hw[0]}x{spec.input_hw[1]}",
        functools.partial(_set, fields={}),
    )
    return sized, [change]


def _set(recipe: Recipe, fields: dict[str, Any]) -> Recipe:
    return recipe.replace(**fields)


def changes_for(card_spec: PreprocessSpec, user_hw: tuple[int, int]) -> list[Change]:
    """Every single-factor change worth trying against ``card_spec``."""
    return _geometry_changes(card_spec, user_hw) + _value_changes(card_spec)


def _adder(out: list[Change]) -> Callable[..., None]:
    def add(factor: str, label: str, fix: str, sets_size: bool = False, **fields: Any) -> None:
        out.append(Change(factor, label, fix, functools.partial(_set, fields=fields), sets_size))

    return add


def _geometry_changes(spec: PreprocessSpec, user_hw: tuple[int, int]) -> list[Change]:
    """Resize filter, antialias, crop offset / no crop / crop order, resize size."""
    out: list[Change] = []
    add = _adder(out)
    card_filter = (
        f"resize with {spec.resize_filter} (PIL Image.Resampling.{spec.resize_filter.upper()})"
    )
    for name in ("bilinear", "bicubic", "nearest", "area", "lanczos"):
        if name != spec.resize_filter:
            aa = spec.antialias or name not in ("nearest", "bilinear")
            add("filter", f"resize filter {name}", card_filter, resize_filter=name, antialias=aa)
    if spec.antialias:
        fix = "resize with antialias=True (tf.image.resize(..., antialias=True); PIL always does)"
        add("antialias", "antialias off", fix, antialias=False)
        if spec.resize_filter == "bilinear":
            add(
                "antialias",
                "antialias off, in cv2.resize's fixed-point arithmetic (INTER_LINEAR)",
                fix + "; with cv2: cv2.resize(image, size, interpolation=cv2.INTER_AREA)",
                antialias=False,
                pixel_rounding="cv2",
            )
    if spec.crop is not None and spec.resize is not None:
        fix_crop = (
            f"resize the shorter side to {spec.resize[0]} keeping the aspect ratio, then "
            f"centre-crop {spec.crop[0]}x{spec.crop[1]}"
        )
        add(
            "crop",
            "centre crop offset floored (TF style; torchvision rounds it)",
            "take the crop offset as round((size - crop) / 2), as torchvision's CenterCrop",
            crop_offset="floor",
        )
        add(
            "crop",
            f"resized straight to {user_hw[0]}x{user_hw[1]} with no centre crop "
            "(aspect ratio not kept)",
            fix_crop,
            sets_size=True,
            resize=user_hw,
            crop=None,
        )
        add(
            "crop",
            "crop then resize" if not spec.crop_first else "resize then crop",
            fix_crop,
            sets_size=True,
            crop_first=not spec.crop_first,
            crop=spec.crop,
            resize=spec.resize,
        )
        add(
            "size",
            f"shorter side resized to {user_hw[0]} (no margin) before the crop",
            fix_crop,
            sets_size=True,
            resize=(user_hw[0],),
        )
        for short in resize_sizes(spec, user_hw):
            add(
                "size",
                f"shorter side resized to {short} (crop ratio {user_hw[0] / short:.3f}) instead "
                f"of {spec.resize[0]} before the centre crop",
                fix_crop,
                sets_size=True,
                resize=(short,),
                crop=user_hw,
            )
        add(
            "crop",
            f"resized to {spec.resize[0]}x{spec.resize[0]} (aspect ratio not kept), then "
            f"centre-cropped to {user_hw[0]}x{user_hw[1]}",
            fix_crop,
            sets_size=True,
            resize=(spec.resize[0], spec.resize[0]),
            crop=user_hw,
        )
        for style, fill, how in letterboxes(spec):
            add(
                "crop",
                f"letterbox: aspect ratio kept, fitted into {user_hw[0]}x{user_hw[1]} and "
                f"padded with {how} (no centre crop)",
                fix_crop,
                sets_size=True,
                letterbox=style,
                pad=fill,
                resize=None,
                crop=user_hw,
            )
        add(
            "size_rounding",
            "resized size rounded (round(w * scale)) where torchvision truncates (int)",
            "compute the resized size as int(long_side * size / short_side)",
            size_rounding="round",
        )
    add(
        "rounding",
        "resized pixels truncated to 8 bits (astype(uint8) floors; PIL and torchvision round)",
        "round the resized pixels (np.round / np.rint) before casting to uint8",
        pixel_rounding="floor",
    )
    add(
        "axes",
        "H and W swapped (permute(2, 1, 0) of an HWC image; CHW is permute(2, 0, 1))",
        "transpose HWC to CHW with permute(2, 0, 1) / transpose(2, 0, 1)",
        transpose_hw=True,
    )
    return out


#: Shorter-side sizes of the usual recipes (torchvision's weights: 232, 236, 238, 248,
#: 256, 342, 384...; 0.875 and 0.95 crop ratios), tried against the user's crop.
RESIZE_SIZES = (232, 236, 238, 240, 248, 256, 260, 288, 292, 320, 342, 384)
#: Crop ratios whose shorter side is tried too (crop / resize).
CROP_RATIOS = (0.875, 0.9, 0.95, 0.965)


def resize_sizes(spec: PreprocessSpec, user_hw: tuple[int, int]) -> list[int]:
    """Shorter-side resize sizes to try before a ``user_hw`` crop (not the card's own)."""
    crop = user_hw[0]
    sizes = {s for s in RESIZE_SIZES if s > crop} | {round(crop / r) for r in CROP_RATIOS}
    card = spec.resize[0] * user_hw[0] / spec.input_hw[0] if spec.resize else None
    return sorted(s for s in sizes if s > crop and s != card)


def letterboxes(spec: PreprocessSpec) -> list[tuple[str, tuple[float, float, float], str]]:
    """(style, 8-bit RGB fill, description) of the letterboxes worth trying."""
    r, g, b = (float(m / spec.scale) for m in spec.mean)
    zero = (r, g, b)
    fills = [((0.0,) * 3, "black (0)"), ((114.0,) * 3, "grey 114 (YOLO)")]
    fills += [((128.0,) * 3, "grey 128"), (zero, "zeros after normalisation")]
    return [(style, fill, how) for style in ("round", "int", "tf") for fill, how in fills]


def _value_changes(spec: PreprocessSpec) -> list[Change]:
    """Decoding (EXIF, 16-bit, alpha), channel order, mean/std order, normalisation."""
    out: list[Change] = []
    add = _adder(out)
    add(
        "exif",
        "EXIF orientation not applied" if spec.exif_transpose else "EXIF orientation applied",
        "apply PIL.ImageOps.exif_transpose(image) right after Image.open"
        if spec.exif_transpose
        else "do not apply the EXIF orientation",
        exif_transpose=not spec.exif_transpose,
    )
    add(
        "sixteen_bit",
        "16-bit image clipped to 8 bits (Image.convert('RGB') clips values above 255)",
        "scale 16-bit images to 8 bits (x * 255 / 65535) before converting to RGB",
        sixteen_bit="clip",
    )
    for alpha in ("drop", "white", "black"):
        if alpha != spec.alpha:
            add(
                "alpha",
                f"alpha handled as {alpha!r} (card: {spec.alpha!r})",
                "image.convert('RGB') (keep the colour under transparent pixels)"
                if spec.alpha == "drop"
                else f"composite transparent pixels on {spec.alpha}",
                alpha=alpha,
            )
    add(
        "channel_order",
        f"channel order {'BGR' if spec.channel_order == 'RGB' else 'RGB'}",
        f"feed {spec.channel_order} channels (cv2 loads BGR: cv2.cvtColor(image, "
        "cv2.COLOR_BGR2RGB); drop any [..., ::-1])",
        channel_order="BGR" if spec.channel_order == "RGB" else "RGB",
    )
    if len(set(spec.mean)) > 1 or len(set(spec.std)) > 1:
        add(
            "stats_order",
            "mean/std applied in the wrong channel order",
            "apply each channel's own mean/std (R, G, B constants to the R, G, B channels)",
            stats_swapped=True,
        )
    card_norm = _norm_text(spec)
    values: dict[str, dict[str, Any]] = {
        "normalisation 'tf' ([-1, 1])": {**PRESETS["tf"], "scale": 1 / 255},
        "normalisation 'caffe' (0-255, mean subtraction)": {
            k: v for k, v in PRESETS["caffe"].items() if k != "channel_order"
        },
        "normalisation 'torch' (ImageNet mean/std)": {
            "scale": 1 / 255,
            "mean": (0.485, 0.456, 0.406),
            "std": (0.229, 0.224, 0.225),
        },
        "mean/std in 0-255 units applied to 0-1 pixels": {
            "mean": tuple(m / spec.scale for m in spec.mean),
            "std": tuple(s / spec.scale for s in spec.std),
        },
        "pixels left in 0-255 with mean/std in 0-1 units (the scaling missing)": {
            "scale": 1.0,
        },
        "value range 0-1 (scale 1/255, no mean/std)": {
            "scale": 1 / 255,
            "mean": (0.0,) * 3,
            "std": (1.0,) * 3,
        },
        "value range 0-255 (scale 1, no mean/std)": {
            "scale": 1.0,
            "mean": (0.0,) * 3,
            "std": (1.0,) * 3,
        },
    }
    for label, fields in values.items():
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        candidate = spec.replace(**fields)
        if candidate != spec:
            short = label.split(" (")[0] if label.startswith("normalisation") else label
            add("values", short, card_norm, **fields)
    for mode, label in (
        ("standardise", "per-image standardisation (tf.image.per_image_standardization)"),
        ("standardise-per-channel", "per-image per-channel standardisation"),
    ):
        add("values", label, card_norm, values=mode)
    return out


def _score(
    renderer: Renderer, recipe: Recipe, changes: tuple[Change, ...], user: np.ndarray
) -> Scored | None:
    try:
        expected = renderer.render(recipe)
    except ValueError:
        return None
    if expected.shape != user.shape:
        return None
    diff = np.abs(expected - user)
    per_image = diff.reshape(len(diff), -1).max(axis=1)
    tolerance = half_level_tolerance(recipe, renderer.pixels(recipe))
    return Scored(
        recipe, changes, float(diff.max()), float(diff.mean()), tolerance, per_image.tolist()
    )


@dataclasses.dataclass
class SearchResult:
    """The card's recipe scored, the explanation (or ``None``), and the closest tried."""

    card: Scored
    explained: Scored | None
    closest: list[Scored]
    tried: int


def search(
    renderer: Renderer,
    card_spec: PreprocessSpec,
    user: np.ndarray,
    extra: Sequence[Change] = (),
    max_factors: int = MAX_FACTORS,
    beam: int = BEAM,
    accept: Callable[[Scored], bool] | None = None,
) -> SearchResult:
    """The smallest combination of factor changes that reproduces ``user`` (NCHW).

    A level with no recipe within half an 8-bit step still ends the search when
    ``accept`` (the residual's effect on the model) takes its closest recipe, provided
    that recipe's residual averages under :data:`ACCEPT_MEAN_STEPS` 8-bit steps.
    """
    user_hw = (int(user.shape[2]), int(user.shape[3]))
    start, size_change = base_recipe(card_spec, user_hw)
    if keeps_floats(user) and start.spec.resize is not None:
        start = start.replace(pixel_rounding="none")  # e.g. tf.image.resize: not a fault
    all_changes = changes_for(card_spec, user_hw)
    first = _score(renderer, start, (*extra, *size_change), user)
    tried: list[Scored] = [first] if first is not None else []
    card = first if first is not None else Scored(start, (), np.inf, np.inf, 0.0, [])
    if first is not None and first.reproduces:
        return SearchResult(card, first, [], 1)
    frontier = [card]
    seen = {start}
    for _ in range(max_factors):
        level: list[Scored] = []
        for parent in frontier:
            used = {c.factor for c in parent.changes}
            for change in all_changes:
                if change.factor in used:
                    continue
                try:
                    recipe = change.apply(parent.recipe)
                except ValueError:
                    continue
                if recipe in seen:
                    continue
                seen.add(recipe)
                kept = tuple(
                    c for c in parent.changes if not (change.sets_size and c.factor == "input_size")
                )
                scored = _score(renderer, recipe, (*kept, change), user)
                if scored is None or (scored.max_abs, scored.mean_abs) == (
                    parent.max_abs,
                    parent.mean_abs,
                ):
                    continue  # not applicable, or changes nothing on these images
                level.append(scored)
                if scored.reproduces:  # the first level with a hit is the smallest
                    tried.extend(level)
                    return SearchResult(card, scored, _closest(tried, card), len(tried))
        tried.extend(level)
        if not level:
            break
        best = min(level, key=lambda s: s.mean_abs)
        small = best.mean_abs <= ACCEPT_MEAN_STEPS * max(best.recipe.level(), best.tolerance)
        if accept is not None and small and accept(best):
            return SearchResult(card, best, _closest(tried, card), len(tried))
        frontier = sorted(level, key=lambda s: s.mean_abs)[:beam]
    return SearchResult(card, None, _closest(tried, card), len(tried))


def keeps_floats(user: np.ndarray) -> bool:
    """Whether the pipeline keeps resized pixels as floats: an 8-bit image under any
    per-channel (or per-image) affine normalisation has at most 256 values per channel."""
    return any(len(np.unique(channel)) > 257 for image in user for channel in image)


def _closest(tried: Sequence[Scored], card: Scored, count: int = 3) -> list[Scored]:
    """The candidates nearest the user's tensors among those closer than the card's."""
    closer = [s for s in tried if s.mean_abs < card.mean_abs]
    return sorted(closer, key=lambda s: (s.mean_abs, len(s.changes)))[:count]
