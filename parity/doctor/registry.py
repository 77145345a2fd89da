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
from parity.doctor.effect import ModelJudge
from parity.doctor.findings import SKIPPED, Finding
from parity.doctor.model_object import diagnose_model_object
from parity.doctor.port_files import lint_port_file
from parity.doctor.port_lint import diagnose_port
from parity.doctor.precision import diagnose_precision
from parity.doctor.preprocessing import diagnose_preprocessing
from parity.errors import ParityError
from parity.preprocess import preprocess_batch
from parity.weights import CALIBRATED


@dataclasses.dataclass
class DoctorInputs:
    """What the user brings; ``None`` means "use the card's / the fixtures'".

    Attributes:
        preprocess: the user's preprocessing, any form of :mod:`parity.doctor.inputs`.
        images: image files to diagnose on (default: every fixture for
            ``preprocessing``, the first ``count`` for the other checks).
        count: how many fixture images the model checks use when ``images`` is not given.
        model: the user's torch model object as they use it (its mode is kept: a model
            left in training mode is diagnosed as such).
        calibration: int8 calibration data: ``"images"``, ``"noise"`` or an NCHW batch.
        port: a Keras port (``.keras``) or an ONNX/TFLite file to lint.
    """

    preprocess: Any | None = None
    images: Sequence[Path] | None = None
    count: int = 4
    model: Any | None = None
    calibration: str | np.ndarray = "images"
    port: Path | None = None

    def paths(self, session: Any, every_fixture: bool = False) -> list[Path]:
        """The images to diagnose on."""
        if self.images is not None:
            return [Path(p) for p in self.images]
        fixtures = session.fixtures if every_fixture else session.fixtures[: self.count]
        return [f.path for f in fixtures]

    def batch(self, session: Any) -> np.ndarray:
        """The images as the card preprocesses them (NCHW float32)."""
        if self.images is None:
            return np.asarray(session.batch[: self.count])
        spec = session.card.preprocess.replace(layout="NCHW", dtype="float32")
        return preprocess_batch(self.paths(session), spec)

    def module(self, session: Any) -> Any:
        """The user's model object, else the card's torch module."""
        return self.model if self.model is not None else session.model().module


CheckFunction = Callable[[Any, DoctorInputs], Finding]


@dataclasses.dataclass(frozen=True)
class Check:
    """One named check: what it finds, and the function that runs it."""

    name: str
    description: str
    run: CheckFunction


def trained(session: Any, inputs: DoctorInputs) -> bool:
    """Whether the model's weights are trained (a user's object is taken to be)."""
    return inputs.model is not None or session.model().source != CALIBRATED


def _preprocessing(session: Any, inputs: DoctorInputs) -> Finding:
    if inputs.preprocess is None:
        return Finding("preprocessing", SKIPPED, "no user preprocessing given (--preprocess)")
    judge = ModelJudge(
        inputs.module(session),
        session.taps,
        session.policy,
        session.card.name,
        trained(session, inputs),
    )
    return diagnose_preprocessing(
        session.card, inputs.preprocess, inputs.paths(session, True), judge=judge
    )


def _batchnorm(session: Any, inputs: DoctorInputs) -> Finding:
    return diagnose_batchnorm(inputs.module(session), inputs.batch(session))


def _port_lint(session: Any, inputs: DoctorInputs) -> Finding:
    if inputs.port is not None:
        return lint_port_file(inputs.port)
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


def _precision(session: Any, inputs: DoctorInputs) -> Finding:
    if inputs.model is None:
        return diagnose_precision(session)
    return diagnose_model_object(
        inputs.model,
        inputs.batch(session),
        session.policy,
        session.card.name,
        session.taps[-1].name,
        trained(session, inputs),
    )


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
            "a Keras port (the card's twin, or your .keras / .onnx / .tflite): BatchNorm "
            "epsilon, 'same' padding on strided conv and pooling, and more",
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
        Check(
            "precision",
            "your model object (--model-object) vs itself in strict fp32: autocast, dtype, "
            "channels_last, TF32; without one, server precision: CUDA TF32 (vs the same run "
            "TF32 off), fp16/bf16 autocast, torch.compile vs eager, per tap (CUDA pairs n/a "
            "without a GPU)",
            _precision,
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


def doctor_inputs(session: Any, options: dict[str, Any]) -> DoctorInputs:
    """The user's inputs, from the command line's strings (in the worker: user code runs)."""
    from parity.doctor.inputs import (
        calibration_data,
        call_user,
        image_files,
        load_object,
        representative_batch,
    )

    calibration = calibration_data(options["calibration"], session.card.preprocess)
    if options.get("representative"):
        generator = load_object(options["representative"], "--representative")
        calibration = call_user(lambda: representative_batch(generator), "--representative")
    model = None
    if options.get("model_object"):
        target = options["model_object"]
        model = call_user(load_object(target, "--model-object"), "--model-object")
    preprocess = options.get("preprocess")
    images = options.get("images")
    return DoctorInputs(
        preprocess=load_object(preprocess, "--preprocess") if preprocess else None,
        images=image_files(Path(images)) if images else None,
        count=int(options.get("count", 4)),
        model=model,
        calibration=calibration,
        port=Path(options["port"]) if options.get("port") else None,
    )
