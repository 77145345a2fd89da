"""Variants by name, derived from the backend registry (:mod:`parity.backends`).

A variant's family is the backend that runs it: the pytest marker and the ``--runtime``
shorthand. Adding a runtime is one backend package plus one entry point; adding an
option combination is one :class:`Variant` in its backend.
"""

from __future__ import annotations

from collections.abc import Sequence

from parity.backends import Variant, backends, reference, variants
from parity.errors import ParityError

__all__ = ["DEFAULT_VARIANTS", "REFERENCE", "VARIANTS", "Variant", "families", "resolve_variants"]

#: Every registered variant by name.
VARIANTS: dict[str, Variant] = variants()

#: Name of the reference variant (the one whose outputs the others are compared with).
REFERENCE: str = reference().name

#: What `parity run` checks when no --runtime is given.
DEFAULT_VARIANTS = ("ort_dynamo", "ort_torchscript")


def families() -> list[str]:
    return sorted(backends())


def resolve_variants(selectors: Sequence[str] | None) -> list[Variant]:
    """Variants named by exact name or family (``onnxruntime`` = all its variants)."""
    if not selectors:
        return [VARIANTS[name] for name in DEFAULT_VARIANTS]
    chosen: list[Variant] = []
    for selector in selectors:
        matches = [v for v in VARIANTS.values() if selector in (v.name, v.family)]
        if not matches:
            raise ParityError(
                f"unknown runtime {selector!r}; variants: {', '.join(VARIANTS)}; "
                f"families: {', '.join(families())}"
            )
        chosen.extend(m for m in matches if m not in chosen)
    return chosen
