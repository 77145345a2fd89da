"""Fault injection: bad input and broken environments, class by class.

Each case breaks one thing a user or the machine can break (a configuration value, a
file, the disk, a concurrent process) and asserts the promise of the README's "what
parity promises" table: a one-line error naming the file (exit 2), a failed variant
(exit 1), an internal error with the traceback's location (exit 3), and never a silent
pass or a half-written file. Most cases need no framework and run in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parity import atomic
from parity.cli import main
from parity.config import load_gate_config
from parity.errors import ModelCardError, ParityError, WeightsError
from parity.fixtures import Fixture, load_fixtures
from parity.golden import GoldenStore
from parity.harness import Session
from parity.paths import bundled_dir
from parity.preprocess import (
    MAX_IMAGE_PIXELS,
    PreprocessSpec,
    _center_crop,
    _resize,
    _resize_window,
    preprocess_batch,
)
from parity.render import render_html, render_junit, render_markdown
from parity.tapmatch import load_tap_map
from parity.taps import Tap
from parity.tolerances import TolerancePolicy
from parity.variants import VARIANTS
from parity.weights import build_module, load_model
from parity.zoo import get_card, load_card

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "--jobs", "-1"], "argument --jobs/-j: must be at least 1, got -1"),
        (["run", "--jobs", "0"], "argument --jobs/-j: must be at least 1, got 0"),
        (["run", "--threads", "-3"], "argument --threads: must be at least 1, got -3"),
        (["check", "--timeout", "nan"], "argument --timeout: must be a finite number"),
        (["run", "--timeout", "0"], "argument --timeout: must be a finite number"),
        (["run", "--timeout", "inf"], "argument --timeout: must be a finite number"),
        (["run", "--timeout", "-5"], "argument --timeout: must be a finite number"),
        (["eval", "--data", ".", "--batch-size", "0"], "argument --batch-size: must be at"),
        (["eval", "--data", ".", "--limit", "x"], "argument --limit: 'x' is not an integer"),
        (["run", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_bad_numeric_options_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
):
    """They ran: --jobs -1 and --threads -3 passed, --timeout nan never timed out and
    --timeout 0 failed every variant. Now one line naming the option, exit 2, before work."""
    one_line_error(capsys, argv, fragment, "--help")


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


# -- 4. golden updates are transactions; disk full leaves nothing half-written ---------

# A synthetic golden set (no framework): VERSION fills every array, so a set mixing two
# updates is visible. Run as a script so it can be killed or starved of disk. Test-only
# hooks (environment variables, patched into this script's parity, never into parity):
#   WRITER_PAUSE=<point>   at <point>, write one byte to fd WRITER_FD and sleep until
#                          signalled: "npz<k>" (k npz files staged), "swap" (the staged set
#                          complete, before the swap), "exchanged" (right after the swap);
#   WRITER_GO=<file>       after importing, create <file>.ready and wait for <file>;
#   WRITER_HOLD=<seconds>  stay that long inside the update, then append "start end" (the
#                          monotonic clock, lock held) to WRITER_LOG;
#   WRITER_NO_LOCK=1       take no lock (to show the log sees overlap when nothing serialises).
WRITER = """
import contextlib, os, sys, resource, signal, time
# Ctrl-C as a user sends it: a test run started in the background inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
import numpy as np
from parity import golden, transaction
from parity.fixtures import Fixture
from parity.golden import OUTPUT_KEY, GoldenStore
from parity.preprocess import PreprocessSpec
from parity.taps import Tap

def pause():
    os.write(int(os.environ["WRITER_FD"]), b"p")
    time.sleep(600)

point = os.environ.get("WRITER_PAUSE", "")
if point.startswith("npz"):
    made, npz_bytes = [], golden._npz_bytes
    def counted(arrays):
        if len(made) == int(point[3:]):
            pause()
        made.append(1)
        return npz_bytes(arrays)
    golden._npz_bytes = counted
if point == "swap":
    swap = transaction._swap
    transaction._swap = lambda staging, target: (pause(), swap(staging, target))
if point == "exchanged":
    exchange = transaction._exchange
    transaction._exchange = lambda a, b: exchange(a, b) and (pause() or True)
class NoLock:
    def acquire(self, timeout=None):
        pass
    def release(self):
        pass
if os.environ.get("WRITER_NO_LOCK"):
    transaction.lock_for = lambda target: NoLock()
if os.environ.get("WRITER_HOLD"):
    replace = golden.replace_folder
    @contextlib.contextmanager
    def held(target):
        with replace(target) as folder:
            start = time.monotonic()
            yield folder
            time.sleep(float(os.environ["WRITER_HOLD"]))
            with open(os.environ["WRITER_LOG"], "a") as log:
                log.write(f"{start} {time.monotonic()} {sys.argv[2]}\\n")
    golden.replace_folder = held
if go := os.environ.get("WRITER_GO"):
    Path(go + "." + sys.argv[2]).touch()
    while not Path(go).exists():
        time.sleep(0.001)

root, version, count = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
if len(sys.argv) > 4:  # disk full: writes past this size fail with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[4]), int(sys.argv[4])))
images = root.parent / "images"
names = [f"img{i:02d}" for i in range(count)]
fixtures = [Fixture(n, images / f"{n}.png", sha256="0" * 64) for n in names]
taps = [Tap("stem", "features.0", "output", "stem"), Tap("logits", "fc", "output", "logits")]
batch = np.zeros((count, 3, 4, 4), np.float32)
rng = np.random.default_rng(0)
stem = rng.normal(size=(count, 64, 56, 56)).astype(np.float32) + version
logits = rng.normal(size=(count, 10)).astype(np.float32) + version
outputs = {OUTPUT_KEY: logits, "stem": stem, "logits": logits}
try:
    GoldenStore(root, "m").write(fixtures, batch, outputs, taps, weights_source="w",
        weights_sha256=str(version), spec=PreprocessSpec(), versions={})
except Exception as exc:
    print(type(exc).__name__, exc, file=sys.stderr)
    sys.exit(2)
"""

SYNTHETIC_TAPS = [
    Tap("stem", "features.0", "output", "stem"),
    Tap("logits", "fc", "output", "logits"),
]


def start_writer(
    root: Path,
    version: int,
    count: int = 6,
    *limit: int,
    pass_fds: tuple[int, ...] = (),
    **hooks: str,
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **hooks}
    argv = [sys.executable, "-c", WRITER, str(root), str(version), str(count), *map(str, limit)]
    return subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True, pass_fds=pass_fds)


def write_set(root: Path, version: int, count: int = 6, *limit: int) -> tuple[int, str]:
    proc = start_writer(root, version, count, *limit)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def accepted_version(root: Path, count: int = 6) -> float:
    """Assert the set in ``root`` is complete and consistent; return its version."""
    store = GoldenStore(root, "m")
    fixtures = [
        Fixture(f"img{i:02d}", root / f"img{i:02d}.png", sha256="0" * 64) for i in range(count)
    ]
    batch = np.zeros((count, 3, 4, 4), np.float32)
    provenance = store.check_fresh(fixtures, batch, PreprocessSpec(), lambda: None, SYNTHETIC_TAPS)
    version = float(provenance.weights_sha256)
    for fixture in fixtures:  # every npz belongs to the same update as the provenance
        logits = store.record(fixture.name, "logits").full
        assert logits is not None and abs(float(np.median(logits)) - version) < 1.0
    leftovers = [p.name for p in root.iterdir() if p.name.startswith(".m.") and p.suffix != ".lock"]
    assert leftovers == [], leftovers
    assert not [p for p in store.folder.iterdir() if ".tmp" in p.name]
    return version


@pytest.fixture(scope="module")
def golden_set_v1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 of the synthetic set, written once by the writer script."""
    root = tmp_path_factory.mktemp("v1") / "goldens"
    assert write_set(root, 1) == (0, "")
    return root


@pytest.fixture
def golden_root(golden_set_v1: Path, tmp_path: Path) -> Path:
    """A fresh copy of version 1 (lock file included) for one test to update or break."""
    root = shutil.copytree(golden_set_v1, tmp_path / "goldens")
    assert accepted_version(root) == 1.0
    return root


def live_version(root: Path) -> float:
    """The version of the set that is live now (read without recovering anything)."""
    provenance = json.loads((GoldenStore(root, "m").folder / "provenance.json").read_text())
    return float(provenance["weights"]["sha256"])


#: Where an update is stopped, and whether the new set is live there.
PAUSES = {"npz0": False, "npz3": False, "swap": False, "exchanged": True}


@pytest.mark.parametrize("point", PAUSES)
@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGINT], ids=["KILL", "INT"])
def test_interrupted_update_leaves_a_set_that_check_accepts(
    golden_root: Path, signal_number: int, point: str
):
    """An update stopped at a known point (the writer says so through a pipe: no timing) and
    killed or interrupted there leaves a whole set: the old one until the swap, the new one
    after it (the staging folder then holds the old set, which is cleaned up)."""
    read, write = os.pipe()
    try:
        proc = start_writer(
            golden_root, 2, 6, pass_fds=(write,), WRITER_PAUSE=point, WRITER_FD=str(write)
        )
        os.close(write)
        ready, _, _ = select.select([read], [], [], 120)
        reached = bool(ready) and os.read(read, 1) == b"p"
    finally:
        os.close(read)
    if not reached:
        proc.kill()
    assert reached, f"the writer never reached {point}: {proc.communicate()[1]}"
    assert live_version(golden_root) == (2.0 if PAUSES[point] else 1.0)
    proc.send_signal(signal_number)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert accepted_version(golden_root) == (2.0 if PAUSES[point] else 1.0)  # whole, no litter


def test_leftovers_of_a_killed_update_are_cleaned_or_rolled_back(golden_root: Path):
    staging = golden_root / ".m.staging"
    staging.mkdir()
    (staging / "img00.npz").write_bytes(b"half")
    assert accepted_version(golden_root) == 1.0  # staging removed before reading
    # Killed between the two renames of the fallback swap: only ".old" holds the set.
    (golden_root / "m").rename(golden_root / ".m.old")
    assert accepted_version(golden_root) == 1.0


@pytest.mark.parametrize("locked", [True, False], ids=["lock", "no-lock"])
def test_concurrent_updates_serialise(golden_root: Path, tmp_path: Path, locked: bool):
    """Three writers released at once: each logs when it held the update (lock taken to
    swap done); the intervals never overlap, and the live set is the last writer's. Without
    the lock (``no-lock``) the same check sees the writers overlap or trip over each other's
    staging folder: it can fail."""
    go, log = tmp_path / "go", tmp_path / "held.log"
    hooks = {"WRITER_GO": str(go), "WRITER_LOG": str(log), "WRITER_HOLD": "0.3"}
    if not locked:
        hooks |= {"WRITER_NO_LOCK": "1", "WRITER_HOLD": "2"}
    procs = [start_writer(golden_root, version, **hooks) for version in (5, 6, 7)]
    deadline = time.monotonic() + 120
    while not all(go.with_name(f"go.{v}").exists() for v in (5, 6, 7)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    go.touch()
    errors = [p.communicate(timeout=300)[1] for p in procs]
    lines = log.read_text().splitlines() if log.exists() else []
    held = sorted(tuple(map(float, line.split())) for line in lines)
    overlaps = [(a, b) for a, b in zip(held, held[1:], strict=False) if b[0] < a[1]]
    serialised = [p.returncode for p in procs] == [0, 0, 0] and len(held) == 3 and not overlaps
    assert serialised == locked, (errors, held)
    if locked:
        assert accepted_version(golden_root) == held[-1][2]  # the last writer's set, whole


def test_disk_full_during_update_keeps_the_old_set(golden_root: Path):
    code, err = write_set(golden_root, 9, 6, 5000)  # each npz is ~7 kB
    assert code == 2 and "File too large" in err and str(golden_root / "m") in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert accepted_version(golden_root) == 1.0


DISK_FULL = """
import sys, resource, signal
from pathlib import Path
from parity import atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
try:
    atomic.write_text(Path(sys.argv[1]), "x" * 5000)
except Exception as exc:
    print(type(exc).__name__, exc, file=sys.stderr)
    sys.exit(2)
"""


def test_disk_full_writing_a_report_leaves_no_file_and_no_litter(tmp_path: Path):
    target = tmp_path / "report" / "summary.md"
    target.parent.mkdir()
    target.write_text("previous report\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(target)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "ParityError" in done.stderr and "File too large" in done.stderr
    assert target.read_text() == "previous report\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.md"]


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], Path]]:
    """``immutable(folder)``: nothing can be created in it, not even by root (tests run as
    root, which chmod does not stop): ``chattr +i``, undone at teardown."""
    frozen: list[Path] = []

    def freeze(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not available here: {done.stderr.strip()}")
        frozen.append(folder)
        return folder

    yield freeze
    for folder in frozen:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_read_only_folders_are_one_line_errors(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    immutable: Callable[[Path], Path],
):
    """``parity init`` in a read-only project folder, ``parity run`` with a read-only cache
    (it was an internal error): one line naming the folder, exit 2."""
    project = immutable(tmp_path / "project")
    monkeypatch.chdir(project)
    one_line_error(capsys, ["init"], str(project), "Operation not permitted")
    assert not any(project.iterdir())
    monkeypatch.chdir(tmp_path)
    cache = immutable(tmp_path / "cache")
    monkeypatch.setenv("PARITY_CACHE_DIR", str(cache))
    one_line_error(capsys, ["run", "-q", "-r", "ort_torchscript"], str(cache), "not permitted")


# A parity command with writes past a size limit failing (EFBIG, as on a full disk).
LIMITED = """
import resource, signal, sys
from parity.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # inherited by the workers: EFBIG, not a kill
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_disk_full_in_the_cache_is_one_line_and_leaves_no_artifact(
    session_for: Callable[[str], Session], parity_cache: Path, tmp_path: Path
):
    """The ONNX export (14 MB) cannot be written under a 12 MB limit: it was an internal
    error (a failed variant before the worker boundary); the export leaves nothing behind."""
    _ = session_for("mobilenet_v2").reference  # weights and reference cached, linked below
    cache = tmp_path / "cache"
    cache.mkdir()
    for folder in ("weights", "reference"):
        (cache / folder).symlink_to(parity_cache / folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PARITY_CACHE_DIR": str(cache)}
    argv = [sys.executable, "-c", LIMITED, str(12 * 2**20), "run", "-q", "-r", "ort_torchscript"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert len(lines) == 1 and "File too large" in lines[0], lines
    assert "torch.onnx.export (dynamo=False)" in lines[0], lines
    left = [p.name for p in (cache / "artifacts").rglob("*") if not p.name.endswith(".lock")]
    assert left == ["mobilenet_v2"], left


def test_json_path_under_an_existing_file_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ParityError, match="cannot write") as info:
        atomic.write_text(blocker / "report.json", "{}")
    assert str(blocker / "report.json") in str(info.value)


def test_obtained_arrays_never_land_in_the_goldens_namespace(golden_root: Path):
    store = GoldenStore(golden_root, "m")
    for fixture in ("img00", "img00.obtained.torch", "provenance"):
        path = store.obtained_path(fixture, "torch")
        assert store.folder not in path.parents
    written = store.write_obtained("img00", "torch", {"logits": np.ones((1, 10))}, 0)
    assert written.is_file() and accepted_version(golden_root) == 1.0


def test_malformed_provenance_and_a_missing_tap_are_one_line_errors(golden_root: Path):
    store = GoldenStore(golden_root, "m")
    fixtures = [Fixture("img00", golden_root / "img00.png", sha256="0" * 64)]
    batch = np.zeros((1, 3, 4, 4), np.float32)
    gained = [*SYNTHETIC_TAPS, Tap("pooled", "avgpool", "output", "pooled")]
    with pytest.raises(ParityError, match="no tap 'pooled'"):
        store.check_fresh(fixtures, batch, PreprocessSpec(), lambda: None, gained)
    data = json.loads(store.provenance_path.read_text())
    for breakage in ({"images": {"img00": {}}}, {"taps": "stem"}, {"weights": None}):
        store.provenance_path.write_text(json.dumps({**data, **breakage}))
        with pytest.raises(ParityError, match="malformed provenance"):
            store.provenance()
    store.provenance_path.write_bytes(b"\xff")
    with pytest.raises(ParityError, match="not valid JSON"):
        store.provenance()


def test_a_golden_npz_missing_one_tap_is_a_one_line_error(golden_root: Path):
    """Consistent provenance (its sha256 matches), but one image's npz lacks a tap."""
    store = GoldenStore(golden_root, "m")
    npz = store.npz_path("img00")
    with np.load(npz) as data:
        kept = {key: data[key] for key in data.files if not key.startswith("stem/")}
    np.savez(npz, **kept)
    provenance = json.loads(store.provenance_path.read_text())
    provenance["images"]["img00"]["npz_sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
    store.provenance_path.write_text(json.dumps(provenance))
    fixtures = [Fixture(f"img{i:02d}", golden_root / f"img{i:02d}.png", "0" * 64) for i in range(6)]
    batch = np.zeros((6, 3, 4, 4), np.float32)
    store.check_fresh(fixtures, batch, PreprocessSpec(), lambda: None, SYNTHETIC_TAPS)
    assert store.record("img00", "logits").full is not None
    with pytest.raises(ParityError, match="no array 'stem/shape' for tap 'stem'") as info:
        store.record("img00", "stem")
    assert str(npz) in str(info.value) and "update-goldens --model m" in str(info.value)


# -- 2. one boundary: user input exits 2, a bug exits 3, never 1 -----------------------


def test_internal_error_exits_3_and_says_where_the_traceback_is(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """A bug (injected: `parity list` raising) is not 'a budget broken' (1) nor bad input."""
    import parity.cli

    def bug(console: object) -> int:
        raise ZeroDivisionError("injected bug")

    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(parity.cli, "list_command", bug)
    assert main(["list"]) == 3
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error: ZeroDivisionError: injected bug" in lines[0], err
    (written,) = (tmp_path / "logs").glob("traceback-*.txt")
    assert str(written) in lines[0] and "Traceback" in written.read_text()
    assert main(["list", "--debug"]) == 3
    assert "Traceback (most recent call last)" in capsys.readouterr().err


USER_MODULE = """
import torchvision

{body}

def build(weights=None, num_classes=1000, **kwargs):
    {build}
"""

BUILDER_FAULTS = {
    "module raises on import": ("raise RuntimeError('no GPU here')", "return None", "no GPU here"),
    "builder raises": ("", "raise ValueError('depth must be even')", "depth must be even"),
    "builder returns no module": ("", "return 42", "expected a torch.nn.Module"),
    "builder kwarg unknown": (
        "",
        "return torchvision.models.resnet18(**kwargs, num_classes=num_classes)",
        "builder",
    ),
}


@pytest.mark.torch
@pytest.mark.parametrize("fault", BUILDER_FAULTS, ids=list(BUILDER_FAULTS))
def test_user_builder_faults_are_one_line_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fault: str
):
    body, build, problem = BUILDER_FAULTS[fault]
    name = f"user_model_{abs(hash(fault))}"
    (tmp_path / f"{name}.py").write_text(USER_MODULE.format(body=body, build=build))
    monkeypatch.syspath_prepend(str(tmp_path))
    card = tmp_path / "mine.toml"
    text = CARD.replace('"torchvision.models:mobilenet_v2"', f'"{name}:build"')
    if fault == "builder kwarg unknown":
        text = text.replace("[weights]", "[builder_kwargs]\nwidth = 3\n\n[weights]")
    card.write_text(text)
    if fault == "builder raises":  # through the CLI: its torch worker, one line, exit 2
        one_line_error(capsys, ["run", "-q", "--model", str(card)], "mine.toml", problem)
    else:  # the same call as that worker's, here (a torch worker per case costs seconds)
        with pytest.raises(ModelCardError) as info:
            build_module(load_card(card))
        message = str(info.value)
        assert "mine.toml" in message and problem in message and "\n" not in message, message


@pytest.mark.torch
def test_bad_state_dicts_are_one_line_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    import torch
    import torchvision

    good = torchvision.models.mobilenet_v2(num_classes=1000).state_dict()
    shape = {**good, "classifier.1.weight": torch.zeros(10, 1280)}
    not_tensor = {**good, "classifier.1.bias": [0.0] * 1000}
    for name, state in (("shape.pt", shape), ("value.pt", not_tensor)):
        torch.save(state, tmp_path / name)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "shape.pt").read_bytes()[:5000])
    # Through the CLI (its torch worker loads the file): one line, exit 2.
    one_line_error(capsys, ["run", "-q", "--weights", str(tmp_path / "shape.pt")], "shape.pt",
                   "does not fit mobilenet_v2")  # fmt: skip
    # The same load as that worker's, here (a torch worker per case costs seconds).
    for name, problem in (("value.pt", "not a tensor"), ("cut.pt", "not a loadable")):
        with pytest.raises(WeightsError) as info:
            load_model(get_card("mobilenet_v2"), str(tmp_path / name))
        message = str(info.value)
        assert name in message and problem in message and "\n" not in message, message


@pytest.mark.torch
def test_truncated_cached_weights_are_computed_again(
    parity_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """The cache is parity's own: a damaged entry is rebuilt, never a traceback."""
    from parity.weights import calibration_key, load_model
    from parity.zoo import get_card

    card = get_card("mobilenet_v2")
    expected = load_model(card).sha256  # fills the session cache
    cached = parity_cache / "weights" / f"mobilenet_v2-calibrated-{calibration_key(card)}.pt"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / cached.name).write_bytes(cached.read_bytes()[:4096])
    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path))
    assert load_model(card).sha256 == expected
    assert (tmp_path / "weights" / cached.name).stat().st_size == cached.stat().st_size


# -- 3. fixture folders: every entry becomes an image or is an error naming it ---------


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(bundled_dir("fixtures") / "images" / "chelsea.png", folder / "chelsea.png")
    return folder


FOLDER_FAULTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "broken link": (lambda d: (d / "gone.png").symlink_to(d / "nowhere.png"), "gone.png", "broken"),
    "link loop": (lambda d: (d / "loop.png").symlink_to(d / "loop.png"), "loop.png", "loop"),
    "folder": (lambda d: (d / "more.png").mkdir(), "more.png", "folder"),
    "broken link without suffix": (lambda d: (d / "x").symlink_to(d / "y"), "x", "broken"),
    "fifo": (lambda d: os.mkfifo(d / "pipe.png"), "pipe.png", "not a regular file"),
    "empty image": (lambda d: (d / "empty.png").write_bytes(b""), "empty.png", "not an image"),
}


@pytest.mark.parametrize("fault", FOLDER_FAULTS, ids=list(FOLDER_FAULTS))
def test_fixture_folder_entries_are_images_or_errors(
    capsys: pytest.CaptureFixture[str], image_folder: Path, fault: str
):
    make, name, problem = FOLDER_FAULTS[fault]
    make(image_folder)
    if fault == "empty image":  # listed fine, refused when decoded
        with pytest.raises(ParityError, match=problem):
            preprocess_batch([f.path for f in load_fixtures(image_folder)])
        return
    one_line_error(capsys, ["run", "--fixtures", str(image_folder)], name, problem)


def test_decompression_bomb_is_refused_with_the_limit(image_folder: Path):
    bomb = image_folder / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)  # 81 Mpx declared in a few kB
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ParityError) as info:
        preprocess_batch([bomb])
    assert "bomb.png" in str(info.value) and f"{MAX_IMAGE_PIXELS:,}" in str(info.value)


STRIP = """
import re, sys
from pathlib import Path
from parity.preprocess import PreprocessSpec, preprocess
spec = PreprocessSpec(antialias=sys.argv[2] == "aa")
tensor = preprocess(Path(sys.argv[1]), spec)
assert tensor.shape == (3, 224, 224), tensor.shape
# VmHWM, not ru_maxrss: the latter keeps the forking pytest's size across exec
print(int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text())[1]) // 1024)
"""


@pytest.mark.parametrize("antialias", ["aa", "no-aa"])
def test_a_tiny_strip_image_does_not_take_gigabytes(tmp_path: Path, antialias: str):
    """A 1 x 12000 PNG resizes to 256 x 3,072,000 before the crop: only the window is made."""
    strip = tmp_path / "strip.png"
    Image.new("RGB", (1, 12000), (200, 100, 50)).save(strip)
    assert strip.stat().st_size < 1000
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", STRIP, str(strip), antialias],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    peak_mib = int(done.stdout.strip())
    assert peak_mib < 400, f"peak RSS {peak_mib} MiB"


def test_resize_window_equals_the_full_resize_without_antialias():
    """The windowed path computes the same values as the full one (no antialias)."""
    image = Image.open(bundled_dir("fixtures") / "images" / "panorama.jpg").convert("RGB")
    spec = PreprocessSpec(antialias=False, resize=(300,), crop=(224, 224))
    full = np.asarray(_center_crop(_resize(image, spec), (224, 224)))
    window = np.asarray(_center_crop(_resize_window(image, spec), (224, 224)))
    np.testing.assert_array_equal(full, window)


# -- 5. reports match the verdict: every failed metric marked in every format ----------


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_every_report_marks_every_failed_metric(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    """A real failing check (budgets tighter than fp32 noise): in Markdown, JUnit and HTML
    the stem's max_abs_norm, 1-cosine and SQNR are drawn as failed, none as passing."""
    (tmp_path / "tight.toml").write_text(
        '[budget."*/*/*"]\nmax_abs_norm = 1e-12\nmin_cosine = 0.999999999999999\n'
        "min_sqnr_db = 300\n"
    )
    (tmp_path / "gate.toml").write_text(
        'models = ["mobilenet_v2"]\nruntimes = ["ort_torchscript"]\n'
        'tolerances = "tight.toml"\nreport = "report"\n'
    )
    assert main(["check", "--config", str(tmp_path / "gate.toml"), "--summary"]) == 1
    capsys.readouterr()
    report = tmp_path / "report"
    data = json.loads((report / "report.json").read_text())
    failing = [v for v in data["models"][0]["variants"] if v["name"] == "ort_torchscript"]
    assert [v["mode"] for v in failing] == ["live", "golden"]
    for variant in failing:
        failed = {f.split(" ")[0] for f in variant["taps"][0]["failures"]}
        assert failed == {"max_abs_norm", "1-cosine", "sqnr_db"}, variant["taps"][0]

    markdown = (report / "summary.md").read_text()
    stem = ("| <code>stem</code> |", "| **<code>stem</code>** |")
    rows = [r for r in markdown.splitlines() if r.startswith(stem) and "❌" in r]
    assert len(rows) == 2, markdown
    for row in rows:
        cells = [c.strip() for c in row.split("|")[2:5]]
        assert all(c.startswith("**") and c.endswith("**") for c in cells), row

    junit = (report / "junit.xml").read_text()
    rows = [r for r in junit.splitlines() if r.startswith("stem ") and "FAIL" in r]
    assert len(rows) == 2 and all(r.count("*") == 3 for r in rows), rows

    html = (report / "report.html").read_text()
    rows = [r[: r.index("</tr>")] for r in html.split("<code>stem</code>")[1:]]
    rows = [r for r in rows if "over budget" in r]
    assert len(rows) == 2 and all(r.count('class="num bad"') == 3 for r in rows), rows

    # A foreign artifact's unmatched taps (left out of the verdict) are listed everywhere.
    entry = {"tap": "features.3", "how": "unmatched", "tensor": None, "layout": None}
    failing[0]["artifact"] = {
        **(failing[0].get("artifact") or {}),
        "tap_matching": [{**entry, "evidence": "2 candidates within budget"}],
    }
    for render in (render_markdown, render_junit, render_html):
        text = render(data)
        assert "features.3" in text and "unmatched, left out of the verdict" in text, render


@pytest.mark.torch
def test_junit_classname_is_stable_and_relative(tmp_path: Path):
    """pytest's JUnit names generated tests parity.<model>.<variant>, not the install path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    xml = tmp_path / "junit.xml"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-k", "chelsea",
            "--parity-models", "mobilenet_v2", "--parity-runtimes", "torch",
            f"--junitxml={xml}"]  # fmt: skip
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.findall(r'classname="([^"]*)"', xml.read_text()) == ["parity.mobilenet_v2.torch"]


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_runtime_refusing_a_built_artifact_is_a_failed_variant_but_a_user_file_is_bad_input(
    capsys: pytest.CaptureFixture[str],
    session_for: Callable[[str], Session],
    monkeypatch: pytest.MonkeyPatch,
    parity_cache: Path,
    tmp_path: Path,
):
    """Exit 1 for ONNX Runtime refusing a file parity built (its meta.json vouches for the
    bytes); exit 2 for the same bytes given by the user with --artifact."""
    cached = cached_torchscript_export(session_for, monkeypatch, parity_cache, tmp_path)
    vouch_for(cached, b"\x08\x07" + b"not a graph" * 100)
    assert main(ORT_RUN) == 1
    out = capsys.readouterr().out
    assert "ONNX Runtime cannot load it" in " ".join(out.split()), out
    one_line_error(capsys, ["run", "-q", "--artifact", str(cached)], str(cached))


ORT_RUN = ["run", "-q", "--runtime", "ort_torchscript", "--summary"]


def cached_torchscript_export(
    session_for: Callable[[str], Session],
    monkeypatch: pytest.MonkeyPatch,
    parity_cache: Path,
    tmp_path: Path,
) -> Path:
    """The session's TorchScript ONNX export copied into an artifact cache of its own (to
    be broken in place), beside the session's weights and reference (coldness is not
    tested; that the export passes: test_onnxruntime.py)."""
    built = session_for("mobilenet_v2").artifact(VARIANTS["ort_torchscript"]).path
    cache = tmp_path / "cache"
    for folder in ("weights", "reference"):
        (parity_cache / folder).mkdir(exist_ok=True)
        cache.mkdir(exist_ok=True)
        (cache / folder).symlink_to(parity_cache / folder)
    relative = built.parent.relative_to(parity_cache / "artifacts")
    shutil.copytree(built.parent, cache / "artifacts" / relative)
    monkeypatch.setenv("PARITY_CACHE_DIR", str(cache))
    return cache / "artifacts" / relative / built.name


def vouch_for(cached: Path, content: bytes) -> None:
    """Replace a cached artifact's bytes, its meta.json vouching for them (parity built it)."""
    cached.write_bytes(content)
    meta = cached.parent / "meta.json"
    data = json.loads(meta.read_text())
    data["sha256"] = hashlib.sha256(content).hexdigest()
    meta.write_text(json.dumps(data))


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_runtime_failing_while_running_a_built_artifact_is_a_failed_variant(
    capsys: pytest.CaptureFixture[str],
    session_for: Callable[[str], Session],
    monkeypatch: pytest.MonkeyPatch,
    parity_cache: Path,
    tmp_path: Path,
):
    """ONNX Runtime loads the file (a Reshape of the input to 7 x ? x 224 x 224 passes
    shape inference: the batch is dynamic) and fails running it (48 channels of 16 images
    do not split into 7): the runtime failed, exit 1, its message in the variant's row."""
    import onnx
    from onnx import helper, numpy_helper

    cached = cached_torchscript_export(session_for, monkeypatch, parity_cache, tmp_path)
    model = onnx.load(str(cached))
    for node in model.graph.node:
        node.input[:] = ["input_reshaped" if name == "input" else name for name in node.input]
    shape = numpy_helper.from_array(np.array([7, -1, 224, 224], np.int64), "bad_shape")
    model.graph.initializer.append(shape)
    reshape = helper.make_node("Reshape", ["input", "bad_shape"], ["input_reshaped"])
    model.graph.node.insert(0, reshape)
    vouch_for(cached, model.SerializeToString())
    assert main([*ORT_RUN, "--json", str(tmp_path / "report.json")]) == 1
    (row,) = json.loads((tmp_path / "report.json").read_text())["variants"]
    assert row["status"] == "error", row
    assert "ONNX Runtime failed running it" in row["error"] and "Reshape" in row["error"], row
