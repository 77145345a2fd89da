"""The runtime-only environments, exercised by the main suite (so CI runs them every time).

The main suite has every framework installed. Here it builds a small bundle
(mobilenet_v2: ONNX dynamo + TFLite fp32), then makes two throwaway venvs that hold
parity's core plus ONE runtime each (ONNX Runtime; LiteRT), and checks the bundle in each
with the installed ``parity`` (``python -P``: the wheel, not the source tree), from the
repository root. The venvs link this environment's installed distributions (no pip run,
no index: seconds instead of minutes of pip installs) and unpack parity's wheel. Then it
breaks the bundle one file at a time and asserts that exactly the envs that read that file
fail, naming it:

* a golden npz: read by every runtime of the model, so both envs fail (exit 2, stale golden);
* the ONNX file: only the ONNX Runtime env fails; the LiteRT env still passes;
* the TFLite file: only the LiteRT env fails; the ONNX Runtime env still passes.

Versions are the [dev]/[ort]/[litert] pins, so these envs check the same numbers as the
main suite. The tox matrix (tox.ini, ``tox -m parity``) does the same for every runtime
and version; this test is its always-on slice.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from envsupport import MAIN_SUITE_VARIANTS, MODEL, ROOT, can_build, tox_runtime
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = [
    pytest.mark.onnxruntime,
    pytest.mark.litert,
    pytest.mark.skipif(
        tox_runtime() is not None or not can_build(),
        reason="needs the full dev env (builds a bundle, then makes runtime-only venvs)",
    ),
]

CORE = ("numpy==2.4.6", "pillow==13.0.0", "rich", "filelock")
#: env name -> (runtime packages, the variant it checks, the bundle file only it reads).
ENVS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "ort": (("onnxruntime==1.31.1", "onnx==1.23.2"), "ort_dynamo", "onnx_dynamo"),
    "litert": (("ai-edge-litert==2.3.0",), "litert_fp32", "tflite_fp32"),
}
assert tuple(variant for _, variant, _ in ENVS.values()) == MAIN_SUITE_VARIANTS  # conftest builds
#: Distributions that must not be in any runtime-only env.
HEAVY = ("torch", "torchvision", "tensorflow", "tensorflow-cpu", "keras", "tf2onnx")
#: What an env can import, by distribution name (its own site-packages only), then where
#: its parity comes from.
LISTING = (
    "import importlib.metadata as m, parity; "
    "print(*sorted(d.metadata['Name'] for d in m.distributions())); print(parity.__file__)"
)


def run(
    command: list[str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PARITY_HOME")}
    done = subprocess.run(
        command, cwd=cwd, timeout=timeout, capture_output=True, text=True, check=False, env=env
    )
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout}\n{done.stderr}"
    return done


def closure(requirements: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    """The distributions of this (the dev) environment that ``requirements`` need, with
    their dependencies; each pinned version must be the one installed here."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        requirement = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        dist = importlib.metadata.distribution(requirement.name)
        assert requirement.specifier.contains(dist.version, prereleases=True), (requirement, dist)
        name = canonicalize_name(dist.metadata["Name"])
        if name not in found:
            found[name] = dist
            todo += [Requirement(r) for r in dist.requires or ()]
    return list(found.values())


def make_env(folder: Path, packages: tuple[str, ...], wheel: Path) -> Path:
    """A venv holding parity's core, ``packages`` (with their dependencies) and parity from
    ``wheel``; its python. The distributions are this environment's own files, linked in
    (the same versions as the [dev] pins, no index needed); the wheel is unpacked."""
    venv.EnvBuilder(with_pip=False, clear=True).create(folder)
    (site,) = folder.glob("lib/python*/site-packages")
    for dist in closure(CORE + packages):
        base = Path(str(dist.locate_file("")))
        assert dist.files, f"{dist.metadata['Name']}: no RECORD, cannot tell its files"
        for top in {Path(f).parts[0] for f in dist.files} - {"..", "__pycache__"}:
            if (base / top).exists() and not (site / top).exists():
                (site / top).symlink_to(base / top)
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return folder / "bin" / "python"


@pytest.fixture(scope="module")
def envs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> python of each runtime-only venv."""
    root = tmp_path_factory.mktemp("venvs")
    wheels = root / "wheel"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                 "--no-build-isolation", "-w", str(wheels)]  # fmt: skip
    run([*pip_wheel, str(ROOT)], timeout=900)
    (wheel,) = wheels.glob("parity-*.whl")
    return {name: make_env(root / name, packages, wheel) for name, (packages, _, _) in ENVS.items()}


def check(python: Path, bundle: Path, variant: str, report: Path) -> subprocess.CompletedProcess:
    """``parity check --bundle --no-live`` in a runtime-only env, from the repository root."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PARITY_HOME")}
    env["COLUMNS"] = "200"  # rich's tables: full variant names
    command = [str(python), "-P", "-m", "parity.cli", "check", "--bundle", str(bundle)]
    command += ["--no-live", "-m", MODEL, "-r", variant, "--summary", "-q", "--report", str(report)]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False, env=env)


def test_envs_hold_only_their_runtime(envs: dict[str, Path]):
    for name, python in envs.items():
        listed, origin = run([str(python), "-P", "-c", LISTING], cwd=ROOT).stdout.splitlines()
        names = {canonicalize_name(n) for n in listed.split()}
        assert not names & set(HEAVY), (name, sorted(names & set(HEAVY)))
        assert "parity" in names
        others = {"onnxruntime", "ai-edge-litert"} - {ENVS[name][0][0].split("==")[0]}
        assert not names & others, (name, sorted(names & others))
        assert str(python.parent.parent) in origin, "parity must come from the venv"


def tampered(bundle: Path, target: Path, relative: str) -> Path:
    """A copy of ``bundle`` with one byte of ``relative`` flipped; the file's path."""
    shutil.copytree(bundle, target)
    path = target / relative
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def artifact_path(bundle: Path, exporter: str) -> str:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return str(manifest["models"][MODEL]["artifacts"][exporter]["path"])


def test_a_broken_golden_fails_every_env_that_reads_it(
    envs: dict[str, Path], bundle: Path, tmp_path: Path
):
    tampered(bundle, tmp_path / "bundle", f"goldens/{MODEL}/chelsea.npz")
    for name, python in envs.items():
        done = check(python, tmp_path / "bundle", ENVS[name][1], tmp_path / name)
        assert done.returncode == 2, f"{name}: {done.stdout}\n{done.stderr}"
        assert "chelsea.npz" in done.stderr and "modified" in done.stderr, done.stderr
        assert "tox -e build" in done.stderr, done.stderr


@pytest.mark.parametrize("broken_env", sorted(ENVS))
def test_a_broken_artifact_fails_exactly_the_env_that_reads_it(
    envs: dict[str, Path], bundle: Path, tmp_path: Path, broken_env: str
):
    exporter = ENVS[broken_env][2]
    relative = artifact_path(bundle, exporter)
    tampered(bundle, tmp_path / "bundle", relative)
    for name, python in envs.items():
        done = check(python, tmp_path / "bundle", ENVS[name][1], tmp_path / name)
        if name == broken_env:
            assert done.returncode == 2, f"{name}: {done.stdout}\n{done.stderr}"
            assert Path(relative).name in done.stderr and "modified" in done.stderr
        else:  # and so each env checks an intact file of its own
            assert done.returncode == 0, f"{name} reads no {exporter}: {done.stdout}{done.stderr}"
            assert "gate: PASS" in done.stdout and ENVS[name][1] in done.stdout
