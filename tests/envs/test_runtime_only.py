"""Runs inside each tox runtime env (and in the main suite): one runtime, no torch/TF.

In a tox runtime env (``PARITY_TOX_RUNTIME`` set by tox.ini) it asserts exactly which
frameworks are installed, checks the bundle with the Python API on that family, and
asserts the check loaded that runtime and nothing it must not. In the main suite (every
framework installed) the strict assertions are skipped and the bundle check runs on the
small bundle the conftest builds (ort_dynamo + litert_fp32).

In every env: a missing, incomplete or stale bundle is a one-line error that names
``tox -e build``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from envsupport import MAIN_SUITE_VARIANTS, MODEL, ROOT, tox_runtime

#: family -> (modules that must be importable, modules that must not be).
EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "onnxruntime": (
        {"onnxruntime", "onnx"},
        {"torch", "torchvision", "tensorflow", "keras", "tf2onnx", "ai_edge_litert"},
    ),
    "litert": (
        {"ai_edge_litert"},
        {"torch", "torchvision", "tensorflow", "keras", "tf2onnx", "onnxruntime", "onnx"},
    ),
    "keras": (
        {"tensorflow", "keras"},
        {"torch", "torchvision", "tf2onnx", "onnxruntime", "onnx", "ai_edge_litert"},
    ),
    "torch": (
        {"torch", "torchvision"},
        {"tensorflow", "keras", "tf2onnx", "onnxruntime", "onnx", "ai_edge_litert"},
    ),
    "openvino": (
        {"openvino"},
        {
            "torch",
            "torchvision",
            "tensorflow",
            "keras",
            "tf2onnx",
            "onnxruntime",
            "onnx",
            "ai_edge_litert",
        },
    ),
}
#: The module a family's check must have loaded (proof that it ran that runtime).
LOADED = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert", "keras": "keras"}
LOADED["torch"] = "torch"
LOADED["openvino"] = "openvino"
FRAMEWORKS = ("torch", "torchvision", "tensorflow", "keras", "onnxruntime", "ai_edge_litert",
              "openvino")  # fmt: skip

strict = pytest.mark.skipif(
    tox_runtime() is None, reason="strict checks only in a tox runtime env (PARITY_TOX_RUNTIME)"
)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def selectors() -> list[str]:
    """What to check: the env's family in tox, else the main suite bundle's variants."""
    runtime = tox_runtime()
    return [runtime] if runtime is not None else list(MAIN_SUITE_VARIANTS)


def a_variant_with_artifact() -> str:
    """A variant of this env that reads an artifact (for the missing-artifact case)."""
    from parity.variants import resolve_variants

    for variant in resolve_variants(selectors()):
        if not variant.reference:
            return variant.name
    pytest.skip("the torch env reads no artifact")


def test_env_variable_names_a_known_family():
    runtime = tox_runtime()
    assert runtime is None or runtime in EXPECTED, runtime


@strict
def test_only_this_runtime_is_installed():
    runtime = tox_runtime()
    assert runtime is not None
    present, absent = EXPECTED[runtime]
    assert {m for m in present if not installed(m)} == set(), f"{runtime} env lacks its runtime"
    assert {m for m in absent if installed(m)} == set(), f"{runtime} env holds other frameworks"


def test_core_imports_load_no_framework():
    """parity's core, CLI, harness and bundle reader import no framework (even if installed)."""
    code = (
        "import sys, parity, parity.cli, parity.harness, parity.bundle, parity.variants; "
        f"print(','.join(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "", done.stdout


def test_bundle_check_passes_with_the_python_api(bundle: Path):
    import parity
    from parity.harness import RunConfig, run_parity
    from parity.variants import REFERENCE, resolve_variants

    assert parity.__version__
    config = RunConfig(model=MODEL, runtimes=selectors(), bundle=bundle)
    report = run_parity(config, modes=("golden",))
    failures = [
        (r.variant.name, r.error or (r.verdict.explain() if r.verdict else None))
        for r in report.results
        if not r.passed
    ]
    assert report.passed, failures

    expected = {v.name for v in resolve_variants(selectors()) if not v.reference}
    if installed("torch"):
        expected.add(REFERENCE)  # the reference itself is checked against the goldens
    assert {r.variant.name for r in report.results} == expected
    assert {r.mode for r in report.results} == {"golden"}
    assert report.weights_sha256 and report.input_sha256

    runtime = tox_runtime()
    if runtime is not None:
        present, absent = EXPECTED[runtime]
        assert LOADED[runtime] in sys.modules, f"the check did not run {LOADED[runtime]}"
        assert {m for m in absent if m in sys.modules} == set()
        if runtime != "torch":
            assert "torch" not in sys.modules
        if runtime != "keras":
            assert "tensorflow" not in sys.modules


def test_bundle_check_passes_with_the_cli(bundle: Path, tmp_path: Path):
    """The installed ``parity`` (``-P``: not the source tree) checks the bundle, exit 0.

    One variant: the tox env's first command already ran the whole family on every model.
    """
    from parity.variants import resolve_variants

    command = [sys.executable, "-P", "-m", "parity.cli", "check", "--bundle", str(bundle)]
    command += ["--no-live", "-m", MODEL, "--summary", "-q", "--report", str(tmp_path)]
    command += ["-r", resolve_variants(selectors())[0].name]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gate: PASS" in done.stdout
    assert json.loads((tmp_path / "report.json").read_text())["passed"] is True


# --- missing, incomplete and stale bundles --------------------------------------------------


def check_error(bundle: Path, variant: str) -> str:
    """The one-line error of ``parity check`` on ``bundle`` (asserting exit 2)."""
    command = [sys.executable, "-P", "-m", "parity.cli", "check", "--bundle", str(bundle)]
    command += ["--no-live", "-m", MODEL, "-r", variant, "-q", "--report", str(bundle / "r")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("parity: error:"), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_missing_bundle_names_the_build_command(tmp_path: Path):
    from parity.bundle import BundleError
    from parity.harness import RunConfig, run_parity

    missing = tmp_path / "no-bundle"
    with pytest.raises(BundleError, match="tox -e build") as info:
        run_parity(RunConfig(model=MODEL, runtimes=selectors(), bundle=missing), modes=("golden",))
    assert str(missing) in str(info.value)

    missing.mkdir()
    line = check_error(missing, selectors()[0])
    assert "no bundle here" in line and "tox -e build" in line


def read_manifest(bundle: Path, target: Path) -> dict:
    """The bundle's manifest, to edit and write into the new folder ``target``."""
    target.mkdir()
    return dict(json.loads((bundle / "manifest.json").read_text()))


def write_manifest(target: Path, data: dict) -> None:
    (target / "manifest.json").write_text(json.dumps(data))


def test_stale_bundle_names_the_build_command(bundle: Path, tmp_path: Path):
    """Built with another preprocessing spec than the model card has now."""
    stale = tmp_path / "stale"
    data = read_manifest(bundle, stale)
    data["models"][MODEL]["preprocess_sha256"] = "0" * 64
    write_manifest(stale, data)
    line = check_error(stale, selectors()[0])
    assert "stale" in line and MODEL in line and "rebuild it with `tox -e build`" in line


def test_bundle_from_an_older_golden_format_names_the_build_command(bundle: Path, tmp_path: Path):
    """A bundle written by an older parity (goldens in another format) is stale too."""
    from parity.golden import FORMAT

    old = tmp_path / "old"
    write_manifest(old, read_manifest(bundle, old))
    shutil.copytree(bundle / "goldens", old / "goldens")
    provenance = old / "goldens" / MODEL / "provenance.json"
    data = json.loads(provenance.read_text())
    data["format"] = FORMAT - 1
    provenance.write_text(json.dumps(data))
    line = check_error(old, selectors()[0])
    assert (
        "stale" in line and "provenance.json" in line and "rebuild it with `tox -e build`" in line
    )


def test_bundle_without_the_model_names_the_build_command(bundle: Path, tmp_path: Path):
    other = tmp_path / "other"
    data = read_manifest(bundle, other)
    del data["models"][MODEL]
    write_manifest(other, data)
    line = check_error(other, selectors()[0])
    assert f"no model '{MODEL}'" in line and "tox -e build" in line


def test_bundle_without_the_artifact_names_the_build_command(bundle: Path, tmp_path: Path):
    variant = a_variant_with_artifact()
    incomplete = tmp_path / "incomplete"
    data = read_manifest(bundle, incomplete)
    shutil.copytree(bundle / "goldens", incomplete / "goldens")
    data["models"][MODEL]["artifacts"] = {}
    write_manifest(incomplete, data)
    line = check_error(incomplete, variant)
    assert "artifact" in line and "tox -e build" in line


def test_corrupt_manifest_names_the_build_command(tmp_path: Path):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{not json")
    line = check_error(corrupt, selectors()[0])
    assert "not valid JSON" in line and "tox -e build" in line
