"""``parity doctor``: name the usual causes of torch-vs-deployment drift, with evidence.

Each check (see :data:`CHECKS`, one module each) returns a :class:`Finding`
(``ok`` / ``problem`` / ``skipped``), a one-line cause and the evidence behind it:

* ``preprocessing`` (:mod:`.preprocessing`): a user's pipeline against the card's spec,
  judged by its effect on the model's taps (:mod:`.effect`); the smallest change of spec
  factors that reproduces the user's tensors (or leaves a residual the model does not
  feel) names the difference.
* ``batchnorm`` (:mod:`.batchnorm`): BatchNorm/Dropout left in training mode, and an
  image run alone vs inside a batch.
* ``port_lint`` (:mod:`.port_lint`): a Keras port's BatchNormalization epsilon,
  ``padding='same'`` on strided convolutions and pooling.
* ``calibration`` (:mod:`.calibration`): int8 calibration data vs the card's images.
* ``delegates`` (:mod:`.delegates`): XNNPACK on vs off, ORT optimisations on vs off.
* ``precision`` (:mod:`.precision`, :mod:`.model_object`): the user's model object vs
  itself in strict fp32 (autocast, dtype, channels_last, TF32); without one, CUDA TF32 vs
  the same run TF32 off (the fix named), fp16/bf16 autocast and torch.compile vs eager.
"""

from __future__ import annotations

from parity.doctor.batchnorm import BATCH_BUDGET, diagnose_batchnorm
from parity.doctor.calibration import (
    attainable_range,
    diagnose_calibration,
    diagnose_calibration_stats,
)
from parity.doctor.delegates import (
    DELEGATE_BUDGET,
    DELEGATE_PAIRS,
    compare_pair,
    delegate_finding,
    diagnose_delegates,
)
from parity.doctor.findings import OK, PROBLEM, SKIPPED, Finding, evidence_lines
from parity.doctor.inputs import UserPreprocess, load_user_preprocess
from parity.doctor.port_lint import TORCH_BN_EPS, diagnose_port
from parity.doctor.precision import TF32_FIX, diagnose_precision, precision_finding
from parity.doctor.preprocessing import PREPROCESS_ATOL, diagnose_preprocessing
from parity.doctor.registry import CHECKS, Check, DoctorInputs, run_doctor

__all__ = [
    "BATCH_BUDGET",
    "CHECKS",
    "DELEGATE_BUDGET",
    "DELEGATE_PAIRS",
    "OK",
    "PREPROCESS_ATOL",
    "PROBLEM",
    "SKIPPED",
    "TF32_FIX",
    "TORCH_BN_EPS",
    "Check",
    "DoctorInputs",
    "Finding",
    "UserPreprocess",
    "attainable_range",
    "compare_pair",
    "delegate_finding",
    "diagnose_batchnorm",
    "diagnose_calibration",
    "diagnose_calibration_stats",
    "diagnose_delegates",
    "diagnose_port",
    "diagnose_precision",
    "diagnose_preprocessing",
    "evidence_lines",
    "load_user_preprocess",
    "precision_finding",
    "run_doctor",
]
