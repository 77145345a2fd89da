"""Fixtures for users' own tests: the shared session, a live check, preprocessing, doctor."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from parity.errors import ParityError
from parity.pytest_plugin.state import plugin_of, torch_first

if TYPE_CHECKING:
    import numpy as np

    from parity.harness import Session
    from parity.result import VariantResult
    from parity.variants import Variant


@pytest.fixture(scope="session")
def parity_session(pytestconfig: pytest.Config) -> Callable[[str], Session]:
    """Factory: ``parity_session("mobilenet_v2") -> Session``, one per model per run."""
    plugin = plugin_of(pytestconfig)

    def session(model: str) -> Session:
        return plugin.session(model)  # its variants and reference run in workers

    return session


@pytest.fixture(scope="session")
def parity_check(pytestconfig: pytest.Config) -> Callable[[str, Any], VariantResult]:
    """``parity_check(model, variant) -> VariantResult``: one variant vs torch now."""
    plugin = plugin_of(pytestconfig)

    def check(model: str, variant: str | Variant) -> VariantResult:
        from parity.variants import VARIANTS, Variant, resolve_variants

        if not isinstance(variant, Variant):
            if variant not in VARIANTS:
                resolve_variants([variant])  # the usual "unknown runtime" message
                raise ParityError(f"{variant!r} is a family; name one variant of it")
            variant = VARIANTS[variant]
        plugin.fetch(model, variant)  # with the reference, in workers
        return plugin.session(model).check(variant)

    return check


@pytest.fixture(scope="session")
def parity_preprocess(pytestconfig: pytest.Config) -> Callable[..., np.ndarray]:
    """``parity_preprocess(path, model=None)``: the card's spec, as a (1, 3, H, W) batch."""
    models = plugin_of(pytestconfig).options.models

    def preprocess(path: str | Path, model: str | None = None) -> np.ndarray:
        from parity.preprocess import preprocess_batch
        from parity.zoo import DEFAULT_MODEL, get_card

        card = get_card(model or (models[0] if models else DEFAULT_MODEL))
        return preprocess_batch([Path(path)], card.preprocess.replace(layout="NCHW"))

    return preprocess


@pytest.fixture(scope="session")
def parity_doctor(
    parity_session: Callable[[str], Session],
) -> Callable[..., list[Any]]:
    """``parity_doctor(model, checks=None, **inputs)``: the doctor's findings.

    The same named checks as ``parity doctor`` (see :mod:`parity.doctor`), on the shared
    session of ``model`` (``inputs``: :class:`parity.doctor.DoctorInputs` fields, e.g.
    ``preprocess=``); assert on ``finding.status`` and read ``finding.cause``.
    """

    local: dict[str, Any] = {}

    def doctor(model: str, checks: Sequence[str] | None = None, **options: Any) -> list[Any]:
        from parity.doctor import run_doctor
        from parity.local import LocalSession

        torch_first()  # the checks run frameworks in this process, on the user's objects
        if model not in local:
            local[model] = LocalSession(parity_session(model).config)
        return run_doctor(local[model], checks, **options)

    return doctor
