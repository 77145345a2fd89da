"""Whether a variant applies to a model here: the one rule behind every ``n/a`` row.

A variant does not apply when its runtime is not installed, when its artifact is built
from something the card does not have (the Keras twin for ``keras``, ``ort_tf2onnx`` and
every LiteRT variant), or when the exporter that makes its artifact needs a package that
is not installed, or the converter environment it runs in is not made
(:mod:`parity.converters`). Such a variant is reported as ``n/a`` with the reason (see
:meth:`parity.result.VariantResult.not_applicable`); every other variant still runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from parity.backends import export_chain, extra_for, get_exporter
from parity.converters import ConverterSpec, spec
from parity.lazy import installed

if TYPE_CHECKING:
    from parity.variants import Variant
    from parity.zoo import ModelCard


def _missing(module: str, why: str) -> str:
    return f"{module} is not installed ({why}); pip install 'parity[{extra_for(module)}]'"


def _card_key(exporter: str) -> tuple[str, str] | None:
    """The card key (and its name) the artifact of ``exporter`` is built from, if any."""
    return next(
        (k for e in export_chain(exporter) if (k := get_exporter(e).card_key) is not None), None
    )


def _twinless_routes(variant: Variant) -> str:
    """The families whose artifacts are made without a Keras twin, the variant's own kind
    (TFLite: litert_torch) first."""
    from parity.backends import variants

    suffix = get_exporter(variant.exporter or "").filename.rpartition(".")[2]
    routes: dict[str, bool] = {}
    for other in variants().values():
        if other.exporter is not None and _card_key(other.exporter) is None:
            same = get_exporter(other.exporter).filename.endswith(f".{suffix}")
            routes[other.family] = routes.get(other.family, False) or same
    return ", ".join(sorted(routes, key=lambda family: not routes[family]))


def not_applicable_reason(variant: Variant, card: ModelCard, exporting: bool = True) -> str | None:
    """Why ``variant`` cannot run for ``card`` here, or ``None`` when it applies.

    ``exporting=False`` when artifacts come from a bundle (no exporter runs).
    """
    if not installed(variant.module):
        return _missing(variant.module, f"the {variant.family} runtime")
    unavailable = variant.unavailable()  # the machine lacks what it needs (a GPU, bf16)
    if unavailable is not None:
        return unavailable
    if variant.exporter is None:
        return None
    chain = export_chain(variant.exporter)[::-1]  # its own exporter first
    needed = _card_key(variant.exporter)
    if needed is not None and getattr(card, needed[0]) is None:
        key, what = needed
        return (
            f"{card.name} has no {what} (card key '{key}'); the {variant.name} artifact "
            f"is made from it. Routes that apply: {_twinless_routes(variant)}, or your own "
            "file: parity check --artifact FILE (or [tool.parity] artifacts)"
        )
    if not exporting:
        return None
    for exporter in chain:
        for module in get_exporter(exporter).imports:
            if not installed(module):
                return _missing(module, f"needed to export {exporter}")
    missing = missing_converter(variant)
    return None if missing is None else missing.absent_reason()


def missing_converter(variant: Variant) -> ConverterSpec | None:
    """The converter environment the variant's artifacts are made in that is not made
    here, or ``None``."""
    for exporter in export_chain(variant.exporter) if variant.exporter else ():
        name = get_exporter(exporter).converter
        if name is not None and spec(name).installed() is None:
            return spec(name)
    return None
