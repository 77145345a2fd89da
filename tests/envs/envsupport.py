"""Helpers for the environment tests: which runtime env this is, and building a bundle.

These tests run in two places:

* inside a tox runtime env (``tox -e ort``, ``litert``, ``keras``, ``torch``, ...), which
  sets ``PARITY_TOX_RUNTIME`` to its family and ``PARITY_BUNDLE`` to the bundle that
  ``tox -e build`` wrote. There ``pytest tests/envs --confcutdir=tests/envs`` keeps the
  main suite's ``tests/conftest.py`` (which imports torch when it can) out of the process;
* in the main suite (``make test``, ``tox -e py311``), where everything is installed:
  the bundle is then built here, once per session, with ``parity bundle`` in a
  subprocess (artifacts from the session's cache, ``PARITY_CACHE_DIR``).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The model every bundle holds, and the variants the main suite's bundle is built with.
MODEL = "mobilenet_v2"
MAIN_SUITE_VARIANTS = ("ort_dynamo", "litert_fp32")

#: What can build a bundle: torch (weights, ONNX export), TF/Keras (Keras twin, TFLite
#: conversion) and LiteRT (the TFLite exporter reads its output back).
BUILD_MODULES = ("torch", "onnxscript", "onnx", "tensorflow", "keras", "ai_edge_litert")


def tox_runtime() -> str | None:
    """The runtime family of the tox env we are in, or None outside the tox runtime envs."""
    return os.environ.get("PARITY_TOX_RUNTIME") or None


def can_build() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in BUILD_MODULES)


def build_bundle(out: Path, model: str, variants: tuple[str, ...]) -> Path:
    """``parity bundle`` in a subprocess of this Python (keeps TF out of the test process)."""
    command = [sys.executable, "-m", "parity.cli", "bundle", "--out", str(out), "-m", model, "-q"]
    for variant in variants:
        command += ["-r", variant]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, env=dict(os.environ)
    )
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return out
