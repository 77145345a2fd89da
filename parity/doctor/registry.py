"""The check registry: name -> (description, function), and the driver that runs them.

A check is a function ``(session, inputs) -> Finding``; ``inputs`` carries what the user
gave (their preprocessing, images, model object, calibration data, port file). Adding a
check is one :class:`Check` entry in :data:`CHECKS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.doctor.batchnorm import diagnose_batchnorm
from parity.doctor.calibration import diagnose_calibration
from parity.doctor.delegates import diagnose_delegates
from parity.doctor.findings import SKIPPED, Finding
from parity.doctor.port_lint import diagnose_port
from parity.doctor.preprocessing import UserPreprocess, diagnose_preprocessing
from parity.errors import ParityError


@dataclasses.dataclass
class DoctorInputs:
    """What the user brings; ``None`` means "use the card's / the fixtures'".

    Attributes:
        preprocess: the user's preprocessing (``path -> array``).
        images: image files to diagnose on (default: the first ``count`` fixtures).
        count: how many fixture images to use when ``images`` is not given.
        calibration: int8 calibration data: ``"images"``, ``"noise"`` or an NCHW batch.
    """

    preprocess: UserPreprocess | None = None
    images: Sequence[Path] | None = None
    count: int = 4
    calibration: str | np.ndarray = "images"

    def paths(self, session: Any) -> list[Path]:
        """The images to diagnose on."""
        if self.images is not None:
            return [Path(p) for p in self.images]
        return [f.path for f in session.fixtures[: self.count]]


CheckFunction = Callable[[Any, DoctorInputs], Finding]


@dataclasses.dataclass(frozen=True)
class Check:
    """One named check: what it finds, and the function that runs it."""

    name: str
    description: str
    run: CheckFunction


def _preprocessing(session: Any, inputs: DoctorInputs) -> Finding:
    if inputs.preprocess is None:
        return Finding("preprocessing", SKIPPED, "no user preprocessing given (--preprocess)")
    return diagnose_preprocessing(
        session.card, inputs.preprocess, inputs.paths(session), session.model().module
    )


def _batchnorm(session: Any, inputs: DoctorInputs) -> Finding:
    return diagnose_batchnorm(session.model().module, session.batch[: inputs.count])


def _port_lint(session: Any, inputs: DoctorInputs) -> Finding:
    if session.card.keras_twin is None:
        return Finding("port_lint", SKIPPED, "the card has no Keras twin")
    from parity import lazy
    from parity.export.keras import build_keras_twin

    lazy.tensorflow()
    twin = build_keras_twin(
        session.card.keras_twin,
        session.model().state_dict_numpy(),
        session.card.preprocess.input_hw,
    )
    return diagnose_port(twin.model)


def _calibration(session: Any, inputs: DoctorInputs) -> Finding:
    return diagnose_calibration(session, inputs.calibration, images=inputs.count)


def _delegates(session: Any, inputs: DoctorInputs) -> Finding:
    return diagnose_delegates(session)


CHECKS: dict[str, Check] = {
    check.name: check
    for check in (
        Check(
            "preprocessing",
            "your pipeline vs the card's spec: the smallest change of spec factors that "
            "reproduces your tensors, and the drift it causes",
            _preprocessing,
        ),
        Check(
            "batchnorm",
            "a model left in training mode; an image alone vs inside a batch",
            _batchnorm,
        ),
        Check(
            "port_lint",
            "a Keras port's BatchNorm epsilon, 'same' padding on strided conv/pooling",
            _port_lint,
        ),
        Check(
            "calibration",
            "int8 calibration data vs the card's images: per-tap SQNR and data statistics",
            _calibration,
        ),
        Check(
            "delegates",
            "XNNPACK on vs off, ONNX Runtime optimisations all vs disabled, per tap",
            _delegates,
        ),
    )
}


def run_doctor(
    session: Any,
    checks: Sequence[str] | None = None,
    inputs: DoctorInputs | None = None,
    **options: Any,
) -> list[Finding]:
    """Run the requested checks (all by default) on a :class:`parity.harness.Session`.

    ``options`` are :class:`DoctorInputs` fields, for callers without an ``inputs``.
    """
    chosen = list(checks or CHECKS)
    unknown = sorted(set(chosen) - set(CHECKS))
    if unknown:
        raise ParityError(f"unknown doctor check(s) {unknown}; known: {', '.join(CHECKS)}")
    given = inputs if inputs is not None else DoctorInputs(**options)
    return [CHECKS[name].run(session, given) for name in chosen]
