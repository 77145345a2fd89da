"""parity in a user's project: discovery, `parity init`, own cards, n/a variants, strict."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parity.applicability import not_applicable_reason
from parity.cli import main
from parity.paths import bundled_dir, find_project
from parity.tolerances import TolerancePolicy
from parity.variants import VARIANTS, resolve_variants
from parity.zoo import get_card, list_models

MNV3_CARD = """\
builder = "torchvision.models:mobilenet_v3_small"

[taps]
stem = "features.0"
blocks = ["features.{1..12}"]
pooled = "input:classifier"
logits = "classifier"
"""


#: The tiny custom model (tests/data/tinynet): the flows below are about the project, not
#: the model, and its exports and runs take milliseconds where mobilenet's take seconds.
TINYNET = Path(__file__).resolve().parent / "data" / "tinynet"
TINY_CARD = (TINYNET / "tiny.toml").read_text()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_process(*argv: str) -> tuple[int, str, str]:
    """``parity ARGV`` in a process of its own (the working directory and environment of
    the test): the parent's taps of three checked files (~0.45 GiB) stay out of the pytest
    process, whose high-water mark they set (bench/suite.md)."""
    done = subprocess.run(
        [sys.executable, "-m", "parity.cli", *argv], capture_output=True, text=True
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Path:
    """``parity init`` in an empty directory, which becomes the working directory."""
    monkeypatch.delenv("PARITY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "init")
    assert code == 0, err
    return tmp_path


def own_card(project: Path, name: str) -> str:
    """Write the own card ``name`` into ``project``: ``mnv3s`` (torchvision's builder) or
    ``tiny`` (tinynet's module beside it, calibrated weights: their sha256 is cached, so a
    warm run starts no torch worker, where a state_dict file's is computed by one)."""
    if name == "mnv3s":
        (project / "parity/models/mnv3s.toml").write_text(MNV3_CARD)
    else:
        shutil.copy2(TINYNET / "tinynet.py", project / "tinynet.py")
        (project / f"parity/models/{name}.toml").write_text(TINY_CARD)
    return name


def test_init_scaffolds_a_project_that_is_found_from_below(project: Path, monkeypatch, capsys):
    assert (project / "parity.toml").is_file()
    assert (project / "parity/models/_example.toml").is_file()
    assert (project / "parity/fixtures/manifest.json").is_file()
    assert "parity/goldens/*/*.obtained.*" in (project / ".gitignore").read_text()
    tolerances = (project / "parity/tolerances.toml").read_text()
    assert 'extends = "bundled"' in tolerances
    # The example card is a template, not a model; the bundled cards are still there.
    assert "_example" not in list_models() and "mobilenet_v2" in list_models()
    # The example is a valid card once copied to a name without "_".
    (project / "parity/models/example.toml").write_text(
        (project / "parity/models/_example.toml").read_text()
    )
    assert get_card("example").builder == "torchvision.models:mobilenet_v3_small"
    nested = project / "src" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    found = find_project()
    assert found.root == project and found.config == project / "parity.toml"
    assert found.tolerances == project / "parity/tolerances.toml"
    # A second init refuses, as one line.
    monkeypatch.chdir(project)
    code, _, err = cli(capsys, "init")
    assert code == 2 and "already a parity project" in err and len(err.strip().splitlines()) == 1


def test_init_appends_tool_parity_to_an_existing_pyproject(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("PARITY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    (tmp_path / "photos").mkdir()
    code, _, err = cli(capsys, "init", "--fixtures", "photos")
    assert code == 0, err
    assert not (tmp_path / "parity.toml").exists()
    assert not (tmp_path / "parity/fixtures").exists()
    project = find_project()
    assert project.config == tmp_path / "pyproject.toml"
    assert project.fixtures == tmp_path / "photos"


def test_init_never_overwrites_what_is_there_and_says_what_it_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.delenv("PARITY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    mine = {
        "parity/fixtures/chelsea.png": b"the user's own image, not the bundled one",
        "parity/tolerances.toml": b"# my budgets\n",
        "parity/models/_example.toml": b"# my notes\n",
        ".gitignore": b"build/",
    }
    for name, content in mine.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    code, out, err = cli(capsys, "init")
    assert code == 0, err
    text = " ".join(out.split())
    for name, content in mine.items():
        kept = (tmp_path / name).read_bytes()
        assert kept == content or name == ".gitignore" and kept.startswith(content + b"\n")
    assert f"kept {tmp_path / 'parity/fixtures'}: it already holds 1 files" in text, text
    assert not (tmp_path / "parity/fixtures/images").exists()
    for name in ("parity/tolerances.toml", "parity/models/_example.toml"):
        assert f"kept {tmp_path / name}: it exists (not overwritten" in text, text
    assert f"wrote {tmp_path / 'parity.toml'}" in text
    assert "parity/goldens/*/*.obtained.*" in (tmp_path / ".gitignore").read_text()
    # A pyproject.toml parity cannot parse is refused, never rewritten.
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    (other / "pyproject.toml").write_text("[project\nname = 'x'\n")
    code, _, err = cli(capsys, "init")
    assert code == 2 and "pyproject.toml" in err and len(err.strip().splitlines()) == 1, err
    assert (other / "pyproject.toml").read_text() == "[project\nname = 'x'\n"


def test_parity_home_overrides_discovery(tmp_path: Path, monkeypatch):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    (home / "parity.toml").write_text('cards = "cards"\n')
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("PARITY_HOME", str(home))
    assert find_project().config == home / "parity.toml"
    monkeypatch.delenv("PARITY_HOME")
    assert find_project().config is None  # nothing configured above /tmp/.../elsewhere


def test_project_tolerances_extend_the_bundled_file(tmp_path: Path):
    own = tmp_path / "tolerances.toml"
    own.write_text('extends = "bundled"\n[budget."mine/*/*"]\nmax_abs_norm = 1e-5\n')
    policy = TolerancePolicy.load(own)
    assert policy.budget("mine", "ort_dynamo", "stem").limits["max_abs_norm"] == 1e-5
    bundled = TolerancePolicy.load(bundled_dir("fixtures") / "tolerances.toml")
    for tap in ("stem", "logits"):
        assert policy.budget("resnet18", "ort_dynamo", tap) == bundled.budget(
            "resnet18", "ort_dynamo", tap
        )
    assert policy.measured_for("mine") and not policy.measured_for("other")
    own.write_text('extends = "tolerances.toml"\n')
    with pytest.raises(Exception, match="names the file itself"):
        TolerancePolicy.load(own)


def test_not_applicable_is_one_rule(project: Path):
    (project / "parity/models/mnv3s.toml").write_text(MNV3_CARD)
    card = get_card("mnv3s")
    for name in ("keras", "ort_tf2onnx", "litert_fp32", "litert_int8_io_noxnn"):
        reason = not_applicable_reason(VARIANTS[name], card)
        assert reason is not None and "no Keras twin" in reason and "keras_twin" in reason
        # ... and names what does apply: the twin-free routes and the user's own file
        routes = reason.partition("Routes that apply: ")[2]
        assert "litert_torch" in routes and "onnxruntime" in routes, reason
        assert "--artifact FILE (or [tool.parity] artifacts)" in routes, reason
    reasons = {v.name: not_applicable_reason(v, card) for v in resolve_variants(["onnxruntime"])}
    assert all(reasons[name] is None for name in ("ort_dynamo", "ort_torchscript"))
    assert "no Keras twin" in (reasons["ort_tf2onnx"] or "")
    assert not_applicable_reason(VARIANTS["keras"], get_card("mobilenet_v2")) is None


@pytest.mark.onnxruntime
@pytest.mark.parametrize("card", ["tiny", pytest.param("mnv3s", marks=pytest.mark.heavy)])
def test_own_card_passes_check_with_na_rows_and_strict_fails(
    project: Path, capsys: pytest.CaptureFixture[str], card: str
):
    """Done-when flow (ONNX Runtime): init, an own card without a Keras twin (the custom
    tinynet; heavy: a torchvision mobilenet_v3_small), goldens, check."""
    model = own_card(project, card)
    code, out, err = cli(capsys, "update-goldens", "-q", "-m", model)
    assert code == 0, err
    assert (project / f"parity/goldens/{model}/provenance.json").is_file()
    runtimes = ("-r", "ort_dynamo", "-r", "ort_tf2onnx", "-r", "keras")
    code, out, err = cli(capsys, "check", "-q", "--summary", "-m", model, *runtimes)
    assert code == 0, out + err
    assert f"config {project / 'parity.toml'}" in out
    assert f"no measured budget for {model}" in out
    report = json.loads((project / "parity-report/report.json").read_text())
    (entry,) = report["models"]
    assert entry["config"] == str(project / "parity.toml")
    assert entry["measured_budgets"] is False
    status = {(v["name"], v["mode"]): v["status"] for v in entry["variants"]}
    assert status[("ort_dynamo", "live")] == "pass" and status[("ort_dynamo", "golden")] == "pass"
    assert status[("torch", "golden")] == "pass"
    for name in ("ort_tf2onnx", "keras"):
        assert status[(name, "live")] == "n/a"
    reasons = {v["reason"] for v in entry["variants"] if v["status"] == "n/a"}
    assert all("no Keras twin" in r for r in reasons)
    junit = (project / "parity-report/junit.xml").read_text()
    assert "<skipped" in junit and 'skipped="4"' in junit
    assert "n/a" in (project / "parity-report/summary.md").read_text()
    # --strict: the same run fails because of the n/a rows (exit 1, not 2).
    code, out, err = cli(capsys, "check", "-q", "--summary", "--strict", "-m", model, *runtimes)
    assert code == 1, out + err
    assert "strict" in out
    # bundle skips the n/a variants with the reason, as check shows them (it was exit 2).
    bundle = project / "bundle"
    code, out, err = cli(capsys, "bundle", "-q", "--out", str(bundle), "-m", model, *runtimes)
    assert code == 0, out + err
    text = " ".join(out.split())
    assert f"n/a {model} ort_tf2onnx: {model} has no Keras twin" in text, text
    assert f"n/a {model} keras: {model} has no Keras twin" in text, text
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["models"][model]["artifacts"]) == {"onnx_dynamo"}


FT10_CARD = """\
builder = "torchvision.models:mobilenet_v2"
num_classes = 10
keras_twin = "mobilenet_v2"

[weights]
default = "weights/ft10.pt"

[taps]
stem = "features.0"
blocks = ["features.{1..17}"]
features = "features.18"
pooled = "input:classifier"
logits = "classifier"
"""


#: Where each card's classifier head is, and its input width.
HEADS = {"ft10": ("classifier.1", 1280), "tiny": ("head", 16)}


def fine_tuned_state_dict(project: Path, model: str, classes: int | None = None) -> None:
    """Write card ``model`` (``ft10``: mobilenet_v2, 10 classes; ``tiny``: tinynet, 5) and
    its state_dict: the calibrated weights with a new, seeded ``classes``-way head."""
    import torch

    from parity.weights import CALIBRATED, load_model

    if model == "ft10":
        (project / "parity/models/ft10.toml").write_text(FT10_CARD)
    else:
        own_card(project, model)
        weights = f'[weights]\ndefault = "weights/{model}.pt"\n\n[taps]'
        (project / f"parity/models/{model}.toml").write_text(TINY_CARD.replace("[taps]", weights))
    card = get_card(model)
    state = load_model(card, CALIBRATED).module.state_dict()
    head, width = HEADS[model]
    generator = torch.Generator().manual_seed(10)
    state[f"{head}.weight"] = torch.randn(classes or card.num_classes, width, generator=generator)
    state[f"{head}.bias"] = torch.randn(classes or card.num_classes, generator=generator)
    state[f"{head}.weight"] *= 0.05
    state[f"{head}.bias"] *= 0.05
    path = project / f"parity/models/weights/{model}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


@pytest.mark.torch
def test_state_dict_that_does_not_fit_is_one_line(project: Path, capsys):
    fine_tuned_state_dict(project, "tiny", classes=7)
    code, _, err = cli(capsys, "run", "-q", "-m", "tiny")
    assert code == 2 and "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.strip()]
    for fragment in ("tiny.pt", "head.weight", "(7, 16)", "(5, 16)"):
        assert fragment in line, line


@pytest.mark.torch
def test_own_builder_from_the_project_root_and_its_errors(project: Path, capsys):
    package = project / "mynet"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "import torch\n\n"
        "def build(weights=None, num_classes=1000, width=8):\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.ReLU(),\n"
        "        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),\n"
        "        torch.nn.Linear(width, num_classes))\n\n"
        "def wrong(width=8):\n"
        "    return None\n"
    )
    card = 'builder = "mynet.models:{fn}"\nnum_classes = 4\n[taps]\nstem = "0"\nlogits = "4"\n'
    (project / "parity/models/tiny.toml").write_text(card.format(fn="build"))
    from parity.weights import build_module

    assert build_module(get_card("tiny"))[4].out_features == 4
    (project / "parity/models/bad.toml").write_text(card.format(fn="wrong"))
    code, _, err = cli(capsys, "run", "-q", "-m", "bad", "-r", "ort_dynamo")
    assert code == 2 and "Traceback" not in err
    assert "bad.toml" in err and "builder(weights=None, num_classes=" in err


@pytest.mark.onnxruntime
def test_fine_tuned_state_dict_passes_check_with_measured_budgets(project: Path, capsys):
    """Done-when flow (ONNX Runtime): an own model's fine-tuned state_dict (tinynet), its
    budgets measured, then check (heavy: mobilenet_v2 on every runtime, below). Measuring
    again and unmeasured variants: test_budgets.py's write_rules and policy tests."""
    model = "tiny"
    fine_tuned_state_dict(project, model)
    runtimes = ("-r", "ort_dynamo", "-r", "ort_dynamo_noopt")
    code, out, err = cli(capsys, "budgets", "-q", "-m", model, *runtimes, "--write")
    assert code == 0, out + err
    tolerances = (project / "parity/tolerances.toml").read_text()
    assert '[budget."tiny/*/logits"]' in tolerances and "measured by `parity budgets`" in tolerances
    assert "ort_dynamo_noopt@1t" in tolerances  # thread counts and optimisation off measured
    policy = TolerancePolicy.load(project / "parity/tolerances.toml")
    assert policy.measured_for(model)
    assert cli(capsys, "update-goldens", "-q", "-m", model)[0] == 0
    code, out, err = cli(capsys, "check", "-q", "--summary", "-m", model, *runtimes)
    assert code == 0, out + err
    assert "no measured budget" not in out
    (entry,) = json.loads((project / "parity-report/report.json").read_text())["models"]
    assert entry["measured_budgets"] is True
    assert {v["status"] for v in entry["variants"]} <= {"pass", "n/a"}
    # n/a only for what this machine lacks: ORT execution providers of other builds.
    for variant in entry["variants"]:
        assert variant["status"] == "pass" or "ExecutionProvider" in variant["reason"], variant
    sources = {v["name"]: v["taps"][-1]["budget_sources"] for v in entry["variants"] if "taps" in v}
    for name in runtimes[1::2]:  # both measured: both judged by the measured rules
        assert sources[name]["max_abs_norm"] == "tiny/*/logits", sources


@pytest.mark.onnxruntime
def test_check_artifacts_made_elsewhere_writes_the_gate_reports(
    tmp_path: Path, session_for, capsys: pytest.CaptureFixture[str]
):
    from parity.faults import perturb_onnx_conv

    exported = session_for("mobilenet_v2").artifact(VARIANTS["ort_dynamo"]).path
    good, broken = tmp_path / "vendor.onnx", tmp_path / "broken.onnx"
    good.write_bytes(exported.read_bytes())
    perturb_onnx_conv(exported, broken, "features.7")
    report = tmp_path / "report"
    argv = ["check", "-q", "--summary", "-m", "mobilenet_v2", "--report", str(report)]
    code, out, err = cli(capsys, *argv, "--artifact", str(good))
    assert code == 0, out + err
    code, out, err = cli(capsys, *argv, "--artifact", str(good), "--artifact", str(broken))
    assert code == 1, out + err
    models = json.loads((report / "report.json").read_text())["models"]
    verdicts = [(m["variants"][0]["name"], m["variants"][0]["status"]) for m in models]
    assert verdicts == [("external_onnxruntime", "pass"), ("external_onnxruntime", "fail")]
    assert models[1]["variants"][0]["first_divergent_tap"] == "features.7"
    assert (report / "junit.xml").is_file() and (report / "summary.md").is_file()


@pytest.mark.heavy
def test_fine_tuned_state_dict_every_runtime(project: Path, capsys):
    """Done-when flow, every runtime (Keras twin, tf2onnx, LiteRT incl. quantised)."""
    fine_tuned_state_dict(project, "ft10")
    everything = ("-r", "onnxruntime", "-r", "keras", "-r", "litert")
    code, out, err = cli(capsys, "budgets", "-q", "-m", "ft10", *everything, "--write")
    assert code == 0, out + err
    tolerances = (project / "parity/tolerances.toml").read_text()
    for rule in ('"ft10/*/logits"', '"ft10/litert_int8*/', '"ft10/litert_fp16*/logits"'):
        assert rule in tolerances, rule
    assert cli(capsys, "update-goldens", "-q", "-m", "ft10")[0] == 0
    code, out, err = cli(capsys, "check", "-q", "--summary", "-m", "ft10", *everything)
    assert code == 0, out + err
    (model,) = json.loads((project / "parity-report/report.json").read_text())["models"]
    assert {v["status"] for v in model["variants"]} <= {"pass", "n/a"}
    # n/a only for what this machine lacks: ORT execution providers of other builds.
    for variant in model["variants"]:
        assert variant["status"] == "pass" or "ExecutionProvider" in variant["reason"], variant


@pytest.mark.onnxruntime
def test_check_checks_the_files_listed_in_tool_parity_and_fails_on_a_broken_one(
    project: Path, session_for
):
    """[tool.parity] artifacts: every `parity check` checks the shipped files too."""
    from parity.faults import perturb_onnx_conv

    exported = session_for("mobilenet_v2").artifact(VARIANTS["ort_dynamo"]).path
    (project / "dist").mkdir()
    shipped = project / "dist/model.onnx"
    shipped.write_bytes(exported.read_bytes())
    perturb_onnx_conv(exported, project / "dist/broken.onnx", "features.7")
    config = project / "parity.toml"
    text = config.read_text()
    assert "# artifacts = [" in text  # `parity init` shows where the shipped files go
    text = re.sub(r"(?m)^models = .*$", 'models = ["mobilenet_v2"]', text)
    text = re.sub(r"(?m)^runtimes = .*$", 'runtimes = ["ort_dynamo"]', text)
    text = re.sub(r"(?m)^goldens = .*$", "", text)  # mobilenet_v2's bundled goldens
    config.write_text(
        text + 'artifacts = [{path = "dist/model.onnx", runtime = "onnxruntime"},'
        ' {path = "dist/broken.onnx"}]\n'
    )
    argv = ("check", "-q", "--summary", "--report", str(project / "report"))
    code, out, err = cli_process(*argv)
    assert code == 1, out + err
    models = json.loads((project / "report/report.json").read_text())["models"]
    checks = [[(v["name"], v["mode"]) for v in m["variants"]] for m in models]
    shipped_checks = [("external_onnxruntime", "live"), ("external_onnxruntime", "golden")]
    assert checks == [
        [("torch", "golden"), ("ort_dynamo", "live"), ("ort_dynamo", "golden")],
        shipped_checks,  # vs torch and vs the goldens, like the built-in variant
        shipped_checks,
    ]
    assert [v["status"] for v in models[0]["variants"]] == ["pass", "pass", "pass"]
    assert [v["status"] for v in models[1]["variants"]] == ["pass", "pass"]
    for broken in models[2]["variants"]:
        assert broken["status"] == "fail" and broken["first_divergent_tap"] == "features.7"
    # --no-live (goldens only) says the shipped file was not checked, never a silent pass.
    code, out, err = cli_process(*argv, "--no-live")
    text = out.replace("\n", "")
    assert code == 0 and "dist/model.onnx: not checked" in text and "dist/broken.onnx" in text


def test_a_listed_file_of_a_multi_model_gate_names_its_model(tmp_path: Path):
    from parity.config import load_gate_config
    from parity.errors import ParityError

    config = tmp_path / "parity.toml"
    config.write_text('models = ["a", "b"]\nartifacts = [{path = "m.tflite"}]\n')
    with pytest.raises(ParityError, match=r"artifacts\[0\] \(m.tflite\): say which model"):
        load_gate_config(config)
    config.write_text('models = ["a", "b"]\nartifacts = [{path = "m.tflite", model = "b"}]\n')
    gate = load_gate_config(config)
    assert gate.shipped("a") == [] and gate.shipped("b")[0].path == tmp_path / "m.tflite"
