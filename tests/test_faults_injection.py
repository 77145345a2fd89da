"""Fault injection: bad input and broken environments, class by class.

Each case breaks one thing a user or the machine can break (a configuration value, a
file, the disk, a concurrent process) and asserts the promise of the README's "what
parity promises" table: a one-line error naming the file (exit 2), a failed variant
(exit 1), an internal error with the traceback's location (exit 3), and never a silent
pass or a half-written file. Most cases need no framework and run in milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from parity.cli import main
from parity.compare import TolerancePolicy
from parity.config import load_gate_config
from parity.errors import ParityError
from parity.external import load_tap_map
from parity.paths import bundled_dir
from parity.taps import Tap
from parity.zoo import load_card


def one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> str:
    """Run the CLI; assert exit 2 and one stderr line holding every fragment."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("parity: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def refused(load: Callable[[Path], object], path: Path, *fragments: str) -> str:
    """Assert ``load(path)`` raises a one-line ParityError naming the file and fragments."""
    with pytest.raises(ParityError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- 1. configuration: every value validated at load ----------------------------------

BUDGET_FAULTS = {
    "nan": ("max_abs_norm = nan", "max_abs_norm", "finite"),
    "inf": ("max_rel = inf", "max_rel", "finite"),
    "negative max": ("max_abs_norm = -1e-4", "max_abs_norm", ">= 0"),
    "cosine zero": ("min_cosine = 0.0", "min_cosine", "> 0"),
    "cosine negative": ("min_cosine = -0.5", "min_cosine", "> 0"),
    "cosine above one": ("min_cosine = 1.5", "min_cosine", "<= 1"),
    "top-1 zero": ("min_top1_agreement = 0", "min_top1_agreement", "> 0"),
    "top-5 above one": ("min_top5_overlap = 2", "min_top5_overlap", "<= 1"),
    "quoted number": ('max_abs_norm = "5e-4"', "max_abs_norm", "without quotes"),
    "boolean": ("max_abs_norm = true", "max_abs_norm", "a boolean"),
    "list": ("min_sqnr_db = [30]", "min_sqnr_db", "a list"),
    "table": ("max_rel = {a = 1}", "max_rel", "a table"),
    "unknown key": ("max_abs = 1e-4", "'max_abs'", "known:"),
    "notes not text": ("notes = 5", "notes", "a string"),
}


@pytest.mark.parametrize("fault", BUDGET_FAULTS, ids=list(BUDGET_FAULTS))
def test_tolerance_value_that_cannot_fail_or_is_malformed(tmp_path: Path, fault: str):
    body, key, problem = BUDGET_FAULTS[fault]
    path = tmp_path / "tol.toml"
    path.write_text(f'[budget."*/*/*"]\nmax_abs_norm = 5e-4\n[budget."m/*/*"]\n{body}\n')
    refused(TolerancePolicy.load, path, key, problem)


TOLERANCE_FILE_FAULTS = {
    "unknown table": ('[budgets."*/*/*"]\nmax_abs_norm = 1e-4\n', "'budgets'"),
    "budget is a number": ("budget = 5\n", "budget must be a table"),
    "rule is a string": ('budget = {"*/*/*" = "tight"}\n', "must be a table"),
    "no rules": ("[budget]\n", "no [budget"),
    "two-part key": ('[budget."*/*"]\nmax_abs_norm = 1e-4\n', "model/variant/tap"),
    "not TOML": ("[budget\n", "not valid TOML"),
}


@pytest.mark.parametrize("fault", TOLERANCE_FILE_FAULTS, ids=list(TOLERANCE_FILE_FAULTS))
def test_tolerance_file_structure(tmp_path: Path, fault: str):
    text, problem = TOLERANCE_FILE_FAULTS[fault]
    path = tmp_path / "tol.toml"
    path.write_text(text)
    refused(TolerancePolicy.load, path, problem)


def test_tolerance_file_not_utf8_or_a_directory(tmp_path: Path):
    binary = tmp_path / "tol.toml"
    binary.write_bytes(b'\xff\xfe[budget."*/*/*"]\n')
    refused(TolerancePolicy.load, binary, "not UTF-8")
    refused(TolerancePolicy.load, tmp_path, "is a directory")


def test_bad_budget_is_exit_2_on_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    path = tmp_path / "tol.toml"
    path.write_text('[budget."*/*/*"]\nmax_abs_norm = nan\n')
    one_line_error(capsys, ["run", "--tolerances", str(path)], "tol.toml", "max_abs_norm")


CARD = (bundled_dir("models") / "mobilenet_v2.toml").read_text()

CARD_FAULTS = {
    "num_classes string": (("num_classes = 1000", 'num_classes = "lots"'), "num_classes"),
    "num_classes zero": (("num_classes = 1000", "num_classes = 0"), "num_classes must be >= 1"),
    "builder form": (
        ('builder = "torchvision.models:mobilenet_v2"', 'builder = "mobilenet"'),
        "package.module:function",
    ),
    "no builder": (('builder = "torchvision.models:mobilenet_v2"', ""), "builder"),
    "unknown key": (("num_classes = 1000", "num_classes = 1000\ncolour = 1"), "'colour'"),
    "negative seed": (("seed = 0", "seed = -1"), "weights.seed"),
    "seed float": (("seed = 0", "seed = 0.5"), "weights.seed"),
    "unknown preset": (('preset = "torchvision-imagenet"', 'preset = "yolo"'), "preset"),
    "zero resize": (('preset = "torchvision-imagenet"', "resize = 0"), "preprocess.resize"),
    "three crop sizes": (('preset = "torchvision-imagenet"', "crop = [1, 2, 3]"), "crop"),
    "zero std": (('preset = "torchvision-imagenet"', "std = [0.2, 0, 0.2]"), "std[1]"),
    "nan mean": (('preset = "torchvision-imagenet"', "mean = [0.5, nan, 0.5]"), "mean[1]"),
    "bad layout": (('preset = "torchvision-imagenet"', 'layout = "CHW"'), "layout"),
    "antialias string": (('preset = "torchvision-imagenet"', 'antialias = "yes"'), "antialias"),
    "no logits tap": (('logits = "classifier"', ""), "taps.logits"),
    "blocks not a list": (('blocks = ["features.{1..17}"]', 'blocks = "features.1"'), "blocks"),
    "heavy string": (("num_classes = 1000", 'num_classes = 1000\nheavy = "no"'), "heavy"),
}


@pytest.mark.parametrize("fault", CARD_FAULTS, ids=list(CARD_FAULTS))
def test_model_card_values(tmp_path: Path, fault: str):
    (old, new), problem = CARD_FAULTS[fault]
    assert old in CARD
    path = tmp_path / "card.toml"
    path.write_text(CARD.replace(old, new, 1))
    refused(load_card, path, problem)


def test_bad_card_is_exit_2_on_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    path = tmp_path / "card.toml"
    path.write_text(CARD.replace("num_classes = 1000", 'num_classes = "lots"'))
    one_line_error(capsys, ["run", "--model", str(path)], "card.toml", "num_classes")


GATE_FAULTS = {
    "models string": ('models = "resnet18"', "tool.parity.models must be a list"),
    "models empty": ("models = []", "must not be empty"),
    "runtime not a name": ("runtimes = [1]", "tool.parity.runtimes[0]"),
    "live string": ('live = "yes"', "tool.parity.live must be a boolean"),
    "threads zero": ("threads = 0", "tool.parity.threads must be >= 1"),
    "threads string": ('threads = "2"', "tool.parity.threads"),
    "unknown key": ("model = ['resnet18']", "'model'"),
    "report number": ("report = 3", "tool.parity.report"),
}


@pytest.mark.parametrize("fault", GATE_FAULTS, ids=list(GATE_FAULTS))
def test_tool_parity_values(tmp_path: Path, fault: str):
    line, problem = GATE_FAULTS[fault]
    path = tmp_path / "pyproject.toml"
    path.write_text(f"[project]\nname = 'x'\n\n[tool.parity]\n{line}\n")
    refused(load_gate_config, path, problem)


def test_tool_parity_not_a_table(tmp_path: Path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool]\nparity = 3\n")
    refused(load_gate_config, path, "tool.parity must be a table")


def test_bad_gate_config_is_exit_2_on_the_command_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    path = tmp_path / "gate.toml"
    path.write_text("threads = -1\n")
    one_line_error(capsys, ["check", "--config", str(path)], "gate.toml", "threads")


TAPS = [
    Tap("stem", "features.0", "output", "stem"),
    Tap("logits", "classifier", "output", "logits"),
]

TAP_MAP_FAULTS = {
    "unknown tap": ('nosuch = "t1"', "'nosuch'"),
    "tensor number": ("stem = 3", "stem must be a table"),
    "no tensor": ('stem = {layout = "NCHW"}', "stem.tensor"),
    "bad layout": ('stem = {tensor = "t1", layout = "CHW"}', "stem.layout"),
    "extra field": ('stem = {tensor = "t1", axis = 1}', "'axis'"),
    "table beside taps": ('[taps]\nstem = "t1"\n[other]\nx = 1', "other"),
}


@pytest.mark.parametrize("fault", TAP_MAP_FAULTS, ids=list(TAP_MAP_FAULTS))
def test_tap_map_values(tmp_path: Path, fault: str):
    text, problem = TAP_MAP_FAULTS[fault]
    path = tmp_path / "taps.toml"
    path.write_text(text + "\n")
    refused(lambda p: load_tap_map(p, TAPS), path, problem)


def test_tap_map_json_not_a_table(tmp_path: Path):
    path = tmp_path / "taps.json"
    path.write_text('["stem"]')
    refused(lambda p: load_tap_map(p, TAPS), path, "must hold a table")
