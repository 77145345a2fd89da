"""The CLI: the default run, exit codes, and one-line errors for bad input (exit 2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from parity.cli import main
from parity.harness import Session
from parity.paths import fixtures_dir
from parity.variants import VARIANTS

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("parity: error:")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_console_script_default_run_passes_and_writes_json(tmp_path: Path):
    """`parity run` with no arguments: mobilenet_v2, both ONNX exports, per-tap tables."""
    report = tmp_path / "report.json"
    env = {**os.environ, "COLUMNS": "160"}
    done = subprocess.run(
        [sys.executable, "-m", "parity.cli", "run", "--quiet", "--json", str(report)],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    for text in ("ort_dynamo vs torch: per-tap", "ort_torchscript", "features.17", "PASS"):
        assert text in done.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["model"] == "mobilenet_v2"
    assert {v["name"] for v in data["variants"]} == {"ort_dynamo", "ort_torchscript"}
    assert len(data["variants"][0]["taps"]) == 21
    assert data["preprocess"]["sha256"] and data["input_sha256"] and data["weights"]["sha256"]


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_broken_budget_exits_1_and_names_first_tap(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    tight = tmp_path / "tight.toml"
    tight.write_text('[budget."*/*/*"]\nmax_abs_norm = 1e-9\n')
    code, out, _ = run_cli(
        capsys, "run", "-q", "--runtime", "ort_torchscript", "--tolerances", str(tight), "--summary"
    )
    assert code == 1
    assert "FAIL" in out
    assert "first divergent tap 'stem'" in out


def test_unknown_model(capsys: pytest.CaptureFixture[str]):
    code, _, err = run_cli(capsys, "run", "--model", "nosuchnet")
    assert_one_line_error(code, err, "unknown model 'nosuchnet'", "mobilenet_v2")


def test_unknown_runtime(capsys: pytest.CaptureFixture[str]):
    code, _, err = run_cli(capsys, "run", "--runtime", "tensorrt")
    assert_one_line_error(code, err, "unknown runtime 'tensorrt'", "ort_dynamo")


def test_missing_fixtures_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    code, _, err = run_cli(capsys, "run", "--fixtures", str(tmp_path / "nope"))
    assert_one_line_error(code, err, "nope", "no such fixtures directory")


def test_missing_image_file(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    code, _, err = run_cli(capsys, "run", "--fixtures", str(tmp_path / "cat.png"))
    assert_one_line_error(code, err, "cat.png")


def test_file_that_is_not_an_image(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    shutil.copy(fixtures_dir() / "images" / "chelsea.png", tmp_path / "chelsea.png")
    (tmp_path / "notes.png").write_text("this is not a picture\n")
    code, _, err = run_cli(capsys, "run", "--fixtures", str(tmp_path))
    assert_one_line_error(code, err, "notes.png", "not an image")


def test_truncated_image(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    data = (fixtures_dir() / "images" / "coffee.png").read_bytes()
    (tmp_path / "coffee.png").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "run", "--fixtures", str(tmp_path))
    assert_one_line_error(code, err, "coffee.png", "truncated")


def test_bad_tolerance_file(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    bad = tmp_path / "tol.toml"
    bad.write_text('[budget."*/*"]\nmax_abs_norm = 1\n')
    code, _, err = run_cli(capsys, "run", "--tolerances", str(bad))
    assert_one_line_error(code, err, "tol.toml", "model/variant/tap")


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_truncated_cached_onnx(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch,
    parity_cache: Path,
    session_for: Callable[[str], Session],
):
    """A cached artifact whose bytes changed is named, with the way out (--rebuild)."""
    built = session_for("mobilenet_v2").artifact(VARIANTS["ort_torchscript"]).path
    cache = tmp_path / "cache"  # a copy of the session's export; its weights and reference
    cache.mkdir()
    for folder in ("weights", "reference", "class_names"):
        (parity_cache / folder).mkdir(exist_ok=True)
        (cache / folder).symlink_to(parity_cache / folder)
    relative = built.parent.relative_to(parity_cache / "artifacts")
    shutil.copytree(built.parent, cache / "artifacts" / relative)
    monkeypatch.setenv("PARITY_CACHE_DIR", str(cache))
    cached = cache / "artifacts" / relative / built.name
    cached.write_bytes(cached.read_bytes()[:1000])
    code, _, err = run_cli(capsys, "run", "-q", "--runtime", "ort_torchscript")
    assert_one_line_error(code, err, str(cached), "--rebuild")
    assert run_cli(capsys, "run", "-q", "--runtime", "ort_torchscript", "--rebuild")[0] == 0


def test_list_shows_models_variants_fixtures(capsys: pytest.CaptureFixture[str]):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for text in ("mobilenet_v2", "resnet18", "resnet50", "ort_dynamo", "chelsea", "gray16"):
        assert text in out


def test_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    assert "exit codes: 0 pass, 1" in capsys.readouterr().out
