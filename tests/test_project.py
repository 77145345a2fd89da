"""parity as an installed tool: the wheel's bundled assets, from an empty directory.

The wheel is built from this checkout and installed, without an editable path, into a
fresh venv that sees this interpreter's site-packages (torch, ONNX Runtime, ...) through a
``.pth`` file; every command then runs from an empty temporary directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What the wheel is built from (a copy, so stale build/ folders cannot leak into it).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "parity", "models", "fixtures")


def run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``argv`` in ``cwd`` with no PYTHONPATH / PARITY_HOME leaking from this process."""
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PARITY_HOME")}
    return subprocess.run(
        argv, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=900
    )


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parity wheel built from this checkout."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.obtained.*", "*.pyc")
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = work / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    built = run([*pip, "-q", "-w", str(wheels), str(source)], work)
    assert built.returncode == 0, built.stderr
    (built_wheel,) = wheels.glob("parity-*.whl")
    return built_wheel


def make_venv(env: Path, wheel: Path) -> Path:
    """A fresh venv at ``env`` with ``wheel`` installed (no editable path); its ``bin``."""
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    # torch, TF, ONNX Runtime... from this interpreter's environment (sys.prefix).
    deps = sysconfig.get_path("purelib", vars={"base": sys.prefix, "platbase": sys.prefix})
    (purelib / "parity_test_deps.pth").write_text(deps + "\n")
    installed = run(
        [str(env / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        env.parent,
    )
    assert installed.returncode == 0, installed.stderr
    return env / "bin"


@pytest.fixture(scope="session")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv outside any project with the wheel installed; its ``bin``."""
    return make_venv(tmp_path_factory.mktemp("venv") / "venv", wheel)


def test_wheel_is_installed_without_an_editable_path(venv: Path, tmp_path: Path):
    probe = "import parity, parity.paths as p; print(parity.__file__, p.bundled_dir('models'))"
    result = run([str(venv / "python"), "-c", probe], tmp_path)
    assert result.returncode == 0, result.stderr
    module, models = result.stdout.split()
    assert Path(module).is_relative_to(venv.parent), module
    assert Path(models).is_relative_to(venv.parent), models
    assert (Path(models) / "mobilenet_v2.toml").is_file()


def test_wheel_lists_bundled_models_from_an_empty_directory(venv: Path, tmp_path: Path):
    result = run([str(venv / "parity"), "list"], tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("mobilenet_v2", "resnet18", "chelsea", "ort_dynamo"):
        assert name in result.stdout
    assert "no project config" in result.stdout
    assert not any(tmp_path.iterdir())


def test_wheel_runs_the_default_from_an_empty_directory(
    venv: Path, tmp_path: Path, parity_cache: Path
):
    result = run([str(venv / "parity"), "run"], tmp_path, PARITY_CACHE_DIR=str(parity_cache))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ort_dynamo" in result.stdout and "PASS" in result.stdout
    assert not any(tmp_path.iterdir()), "a run must not write into the working directory"


USER_TESTS = "def test_mine():\n    pass\n\n\ndef test_also_mine():\n    pass\n"


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_plugin_runs_the_parity_tests_with_the_venv_inside_the_project(
    wheel: Path, tmp_path: Path, parity_cache: Path
):
    """``python -m venv .venv`` in the project, ``pytest --parity-models ...`` from its root:
    pytest drops the suite's path (covered by ``.``) and never walks into ``.venv``; the
    parity tests must run anyway, write the report, and a session that collects none of
    them must fail (it passed with the user's 2 tests before)."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_mine.py").write_text(USER_TESTS)
    python = make_venv(project / ".venv", wheel) / "python"
    argv = [str(python), "-m", "pytest", "-p", "no:cacheprovider", "-W", "ignore"]
    argv += ["--parity-models", "mobilenet_v2", "--parity-runtimes", "ort_torchscript"]
    cache = str(parity_cache)
    done = run([*argv, "-v", "--parity-report", "report"], project, PARITY_CACHE_DIR=cache)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    passed = [line for line in done.stdout.splitlines() if " PASSED" in line]
    assert sum("test_parity[mobilenet_v2-ort_torchscript-" in line for line in passed) == 16
    assert sum("test_parity[mobilenet_v2-torch-" in line for line in passed) == 16
    assert sum("tests/test_mine.py::" in line for line in passed) == 2
    assert (project / "report" / "report.json").is_file()
    # Nothing else of the venv was collected (site-packages hold many test_*.py files).
    collected = run([*argv, "--collect-only", "-q"], project, PARITY_CACHE_DIR=cache)
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert len(ids) == 34 and all("pytest_suite.py" in i or "test_mine" in i for i in ids), ids
    # No parity test collected (the project's python_functions excludes test_parity).
    empty = run([*argv, "-o", "python_functions=it_*"], project, PARITY_CACHE_DIR=cache)
    errors = [line for line in (empty.stdout + empty.stderr).splitlines() if "ERROR" in line]
    assert empty.returncode == 4, empty.stdout + empty.stderr
    assert len(errors) == 1 and "collected no parity test" in errors[0], errors


MNV3_CARD = """\
builder = "torchvision.models:mobilenet_v3_small"
num_classes = 5

[weights]
seed = 3

[taps]
stem = "features.0"
blocks = ["features.{1..12}"]
pooled = "input:classifier"
logits = "classifier"
"""


@pytest.mark.heavy
@pytest.mark.litert_torch
def test_wheel_litert_torch_route_on_own_cards_and_shipped_files(
    venv: Path, tmp_path: Path, parity_cache: Path
):
    """From the installed wheel: a torchvision mobilenet_v3_small card (own 5-class head,
    seeded weights) and a custom nn.Module card get every litert-torch variant, measured
    budgets, >= 90% of taps located, and a shipped file with one conv scaled by 1% in the
    converted file fails `parity check` at that tap."""
    import json
    import re

    from parity.faults import scale_tflite_conv

    project, cache = tmp_path / "project", str(parity_cache)
    project.mkdir()
    parity = str(venv / "parity")
    assert run([parity, "init"], project).returncode == 0
    tinynet = ROOT / "tests/data/tinynet"
    shutil.copy2(tinynet / "tinynet.py", project / "tinynet.py")
    shutil.copy2(tinynet / "tiny.toml", project / "parity/models/tiny.toml")
    (project / "parity/models/mnv3s.toml").write_text(MNV3_CARD)
    env = {"PARITY_CACHE_DIR": cache, "PYTHONPATH": str(project)}
    for model in ("mnv3s", "tiny"):
        done = run(
            [parity, "budgets", "-q", "-m", model, "-r", "litert_torch", "--write"], project, **env
        )
        assert done.returncode == 0, done.stdout + done.stderr
        report = project / f"{model}.json"
        done = run(
            [parity, "run", "-q", "-m", model, "-r", "litert_torch", "--json", str(report)],
            project,
            **env,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        result = json.loads(report.read_text())
        assert [v["status"] for v in result["variants"]] == ["pass"] * 5
        for variant in result["variants"]:
            matching = variant["artifact"]["tap_matching"]
            located = [m for m in matching if m["how"] != "unmatched"]
            assert len(located) >= 0.9 * len(matching), matching
    fp32 = next((Path(cache) / "artifacts/tiny").glob("litert_torch_fp32-*/model.tflite"))
    (project / "dist").mkdir()
    scale_tflite_conv(fp32, project / "dist/tiny.tflite", "Sequential_conv2", 1.01)
    config = project / "parity.toml"
    text = re.sub(r"(?m)^models = .*$", 'models = ["tiny"]', config.read_text())
    text = re.sub(r"(?m)^runtimes = .*$", 'runtimes = ["litert_torch_fp32"]', text)
    config.write_text(text + 'artifacts = [{path = "dist/tiny.tflite"}]\n')
    assert run([parity, "update-goldens", "-q", "-m", "tiny"], project, **env).returncode == 0
    done = run([parity, "check", "-q", "--summary"], project, **env)
    assert done.returncode == 1, done.stdout + done.stderr
    models = json.loads((project / "parity-report/report.json").read_text())["models"]
    assert {v["status"] for v in models[0]["variants"]} == {"pass"}
    assert [v["mode"] for v in models[1]["variants"]] == ["live", "golden"]
    for shipped in models[1]["variants"]:  # vs torch and vs the goldens
        assert shipped["status"] == "fail" and shipped["first_divergent_tap"] == "block"
    assert (project / "parity-report/tiny-tiny.tflite.modelexplorer.json").is_file()


def package_goldens_digest(python: Path) -> str:
    """A digest of the goldens bundled in the installed package (names and bytes)."""
    probe = (
        "import hashlib, parity.paths as p; d = hashlib.sha256(); root = p.bundled_dir("
        "'fixtures') / 'goldens'\nfor f in sorted(root.rglob('*')):\n"
        "    d.update(str(f).encode() + (f.read_bytes() if f.is_file() else b''))\n"
        "print(d.hexdigest())"
    )
    done = run([str(python), "-c", probe], python.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_update_goldens_writes_the_projects_goldens_never_the_installed_package(
    venv: Path, tmp_path: Path, parity_cache: Path
):
    """In a project made by ``parity init``, update-goldens writes parity/goldens (it wrote
    into site-packages, and check then said 'no goldens'); without a project it refuses."""
    before = package_goldens_digest(venv / "python")
    cache = str(parity_cache)
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = run([str(venv / "parity"), "update-goldens", "-q", "-m", "mobilenet_v2"], empty,
                  PARITY_CACHE_DIR=cache)  # fmt: skip
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert len(lines) == 1 and "read-only" in lines[0] and "parity init" in lines[0], lines
    project = tmp_path / "project"
    project.mkdir()
    assert run([str(venv / "parity"), "init"], project).returncode == 0
    update = [str(venv / "parity"), "update-goldens", "-q", "-m", "mobilenet_v2"]
    done = run(update, project, PARITY_CACHE_DIR=cache)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (project / "parity/goldens/mobilenet_v2/provenance.json").is_file()
    check = [str(venv / "parity"), "check", "-q", "--summary", "-m", "mobilenet_v2"]
    checked = run([*check, "-r", "ort_torchscript", "--no-live"], project, PARITY_CACHE_DIR=cache)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert package_goldens_digest(venv / "python") == before
