"""The pytest plugin, end to end: each test runs pytest in a subprocess (pytester).

The subprocesses share this session's artifact cache (PARITY_CACHE_DIR, set by
conftest.py), so the ONNX export is built at most once. Goldens are always a temporary
copy (``--parity-goldens``): the committed ones are never written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parity.golden import GoldenStore
from parity.harness import RunConfig, Session
from parity.pytest_plugin.state import XDIST_ADVICE
from parity.pytest_plugin.xdist import backend_scope
from parity.variants import VARIANTS
from parity.worker import FAULT_ENV

# A test module may load plugins (only non-root conftest files may not), so pytester
# needs no line in conftest.py and no -p option.
pytest_plugins = ["pytester"]

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime]

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "fixtures" / "goldens"
MODEL = ["--parity-models", "mobilenet_v2"]
ORT = ["--parity-runtimes", "ort_torchscript"]
N_IMAGES = 16

Run = Callable[..., pytest.RunResult]


@pytest.fixture
def run(pytester: pytest.Pytester, parity_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """pytest in a subprocess, in an empty folder, with this session's artifact cache."""
    monkeypatch.setenv("PARITY_CACHE_DIR", str(parity_cache))
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str) -> pytest.RunResult:
        return pytester.runpytest_subprocess("--strict-markers", *args, timeout=600)

    return run


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and ".obtained." not in path.name:
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module", autouse=True)
def committed_goldens_untouched() -> object:
    before = tree_digest(GOLDENS / "mobilenet_v2")
    yield
    assert tree_digest(GOLDENS / "mobilenet_v2") == before, "a test wrote the committed goldens"


def golden_copy(tmp_path: Path) -> Path:
    root = tmp_path / "goldens"
    shutil.copytree(
        GOLDENS / "mobilenet_v2",
        root / "mobilenet_v2",
        ignore=shutil.ignore_patterns("*.obtained.*"),
    )
    return root


def move_logits(root: Path, fixture: str = "chelsea", *, record: bool = True) -> None:
    """Shift one image's stored logits; with ``record``, update provenance's npz sha256.

    Without ``record`` the golden is corrupt (its hash no longer matches); with it, the
    golden is consistent but different: what goldens written by an older torch would be.
    """
    npz = root / "mobilenet_v2" / f"{fixture}.npz"
    with np.load(npz) as data:
        arrays = {key: data[key] for key in data.files}
    logits = arrays["logits/full"].copy()
    logits[::10] += 0.05 * np.abs(logits).max()
    arrays["logits/full"] = arrays["output/full"] = logits
    np.savez_compressed(npz, **arrays)
    if record:
        provenance_path = root / "mobilenet_v2" / "provenance.json"
        provenance = json.loads(provenance_path.read_text())
        provenance["images"][fixture]["npz_sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()
        provenance_path.write_text(json.dumps(provenance, indent=2))


USER_TESTS = """
import numpy as np

def test_live_check(parity_session, parity_check, parity_preprocess):
    session = parity_session("mobilenet_v2")
    assert parity_session("mobilenet_v2") is session
    result = parity_check("mobilenet_v2", "ort_torchscript")
    assert result.passed, result.error or result.verdict.explain()
    assert result.mode == "live" and len(result.verdict.taps) == len(session.taps)
    chelsea = [f.name for f in session.fixtures].index("chelsea")
    tensor = parity_preprocess(session.fixtures[chelsea].path)
    assert tensor.shape == (1, 3, 224, 224) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor[0], session.batch[chelsea])
"""


def test_generated_tests_pass_and_write_reports(
    run: Run, pytester: pytest.Pytester, tmp_path: Path
):
    """No parity test file: 16 images x (torch + ort_torchscript), model-variant-image ids;
    beside them, a user's own test module using parity_session / parity_check /
    parity_preprocess shares the generated tests' session (one pytest run for both)."""
    pytester.makepyfile(test_mine=USER_TESTS)
    report = tmp_path / "report"
    goldens = golden_copy(tmp_path)
    result = run(
        *MODEL, *ORT, "--parity-goldens", str(goldens), "-v", "--parity-report", str(report)
    )
    result.assert_outcomes(passed=2 * N_IMAGES + 1)
    result.stdout.fnmatch_lines(
        [
            "parity: models mobilenet_v2; torch, ort_torchscript; vs goldens",
            "*test_mine.py::test_live_check PASSED*",
            "*test_parity[[]mobilenet_v2-torch-chelsea[]] PASSED*",
            "*test_parity[[]mobilenet_v2-ort_torchscript-chelsea[]] PASSED*",
            f"parity report: {report / 'report.json'}",
        ]
    )
    gate = json.loads((report / "report.json").read_text())
    assert gate["passed"] is True
    [model] = gate["models"]
    assert model["model"] == "mobilenet_v2"
    assert [(v["name"], v["mode"], v["passed"]) for v in model["variants"]] == [
        ("torch", "golden", True),
        ("ort_torchscript", "golden", True),
    ]
    for name in ("summary.md", "junit.xml", "report.html"):
        assert (report / name).is_file(), name


def test_variants_run_in_workers_so_a_crash_fails_only_its_tests(
    run: Run, pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A SIGKILLed ONNX Runtime worker fails ort_dynamo's test with the crash; torch,
    ort_torchscript and ort_dynamo_noopt (a fresh worker for the rest of the crashed one's
    tasks) pass; the report is written; the pytest process itself never imported a
    framework. (The same for a LiteRT worker under ``parity run``: test_workers.py.)"""
    pytester.makeconftest(
        """
        import json, sys

        def pytest_sessionfinish(session):
            names = ("tensorflow", "keras", "ai_edge_litert", "torch", "onnxruntime")
            with open("modules.json", "w") as handle:
                json.dump(sorted(n for n in names if n in sys.modules), handle)
        """
    )
    monkeypatch.setenv(FAULT_ENV, "ort_dynamo:loading")
    report = tmp_path / "report"
    runtimes = "ort_torchscript,ort_dynamo,ort_dynamo_noopt"
    goldens = golden_copy(tmp_path)
    result = run(*MODEL, "--parity-runtimes", runtimes, "--parity-goldens", str(goldens),
                 "--parity-report", str(report), "-k", "chelsea")  # fmt: skip
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ort_dynamo failed to run mobilenet_v2 (first seen in mobilenet_v2-ort_dynamo-"
            "chelsea): ONNX Runtime worker crashed (SIGKILL) while loading model.onnx*",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert json.loads((pytester.path / "modules.json").read_text()) == []
    (model,) = json.loads((report / "report.json").read_text())["models"]
    status = {v["name"]: v["status"] for v in model["variants"]}
    assert status == {name: "pass" for name in ("torch", *runtimes.split(","))} | {
        "ort_dynamo": "error"
    }


def test_a_crashed_torch_reference_fails_the_tests_of_its_model(
    run: Run, parity_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The torch worker SIGKILLed on the reference (none cached): the tests that need it
    fail naming the crash, golden checks are still judged, the report is written."""
    cache = tmp_path / "cache"  # the weights and artifacts, but no cached reference
    cache.mkdir()
    for folder in ("weights", "artifacts"):
        (cache / folder).symlink_to(parity_cache / folder)
    report = tmp_path / "report"
    monkeypatch.setenv("PARITY_CACHE_DIR", str(cache))
    monkeypatch.setenv(FAULT_ENV, "reference:running")
    result = run(*MODEL, *ORT, "--parity-goldens", str(golden_copy(tmp_path)), "--parity-live",
                 "--parity-report", str(report), "-k", "chelsea")  # fmt: skip
    result.assert_outcomes(failed=2)  # ort_torchscript: its goldens pass, its live check not
    result.stdout.fnmatch_lines(["*crashed (SIGKILL) while running the torch reference*"])
    assert "Traceback" not in result.stdout.str()
    (model,) = json.loads((report / "report.json").read_text())["models"]
    status = {(v["name"], v["mode"]): v["status"] for v in model["variants"]}
    assert status == {
        ("torch", "golden"): "error",
        ("ort_torchscript", "golden"): "pass",
        ("ort_torchscript", "live"): "error",
    }
    update = run(*MODEL, *ORT, "--parity-goldens", str(golden_copy(tmp_path / "update")),
                 "--parity-update-goldens")  # fmt: skip
    assert update.ret == pytest.ExitCode.USAGE_ERROR
    update.stderr.fnmatch_lines(["*cannot update goldens: the torch reference could not run*"])
    assert "Traceback" not in update.stdout.str() + update.stderr.str()


def test_family_markers_select_and_deselect(run: Run):
    """Each test carries its family marker (registered by the plugin) and `parity`."""
    ort = sum(v.family == "onnxruntime" for v in VARIANTS.values())
    result = run(*MODEL, "--parity-runtimes", "onnxruntime", "-m", "parity and not onnxruntime",
                 "--collect-only", "-q")  # fmt: skip
    assert result.ret == 0
    lines = [line for line in result.stdout.lines if "test_parity[" in line]
    assert len(lines) == N_IMAGES
    assert all("-torch-" in line for line in lines)
    result.stdout.fnmatch_lines(
        [f"{N_IMAGES}/{(1 + ort) * N_IMAGES} tests collected (* deselected)*"]
    )


def test_corrupt_golden_fails_with_its_message(run: Run, tmp_path: Path):
    """A golden whose bytes no longer match provenance.json: the store's message, no trace."""
    goldens = golden_copy(tmp_path)
    move_logits(goldens, record=False)
    result = run(*MODEL, "--parity-runtimes", "torch", "--parity-goldens", str(goldens),
                 "-k", "chelsea")  # fmt: skip
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*chelsea.npz: golden file missing or modified (sha256 differs from provenance.json)*",
            "to accept the change if intended:",
        ]
    )
    assert "Traceback" not in result.stdout.str()
    assert "INTERNALERROR" not in result.stdout.str()


def test_moved_golden_fails_naming_logits_and_the_accept_command(
    run: Run, tmp_path: Path, parity_cache: Path
):
    """A consistent golden with different logits: the per-tap table, first tap, the fix.

    A top-5 budget below 1 is a rate over the images: per-image tests leave it to the
    variant's whole-set test (``-all_images``), which names the images that moved.
    """
    goldens = golden_copy(tmp_path)
    move_logits(goldens)
    tolerances = tmp_path / "tolerances.toml"
    tolerances.write_text(
        (ROOT / "fixtures" / "tolerances.toml").read_text()
        + '\n[budget."mobilenet_v2/ort_torchscript/logits"]\nmin_top5_overlap = 0.99\n'
    )
    options = ["--parity-goldens", str(goldens), "--parity-tolerances", str(tolerances)]
    result = run(*MODEL, *ORT, *options, "-k", "chelsea or small or all_images")
    result.assert_outcomes(failed=3, passed=2)
    out = result.stdout.str()
    accept = (
        f"pytest --parity-models mobilenet_v2 --parity-runtimes ort_torchscript "
        f"--parity-goldens {goldens} --parity-tolerances {tolerances} --parity-update-goldens"
    )
    # in the cache, never in the goldens' folder (GoldenStore.obtained_path)
    obtained = parity_cache / "obtained" / "mobilenet_v2" / "ort_torchscript" / "chelsea.npz"
    result.stdout.fnmatch_lines(
        [
            "*test_parity[[]mobilenet_v2-ort_torchscript-chelsea[]]*",
            "ort_torchscript vs golden on 'chelsea': first divergent tap 'logits' (max_abs_norm*",
            "mobilenet_v2 / ort_torchscript vs its golden, image 'chelsea':",
            "*tap*max_abs_norm / budget*1-cosine / budget*SQNR dB*status",
            "*stem * ok",
            "*logits *FAIL <- first: max_abs_norm*",
            "first divergent tap 'logits' (output of module 'classifier')*",
            f"obtained arrays: {obtained}",
            "torch moved away from this golden too*",
            "to accept the change if intended:",
            f"  {accept}",
            "*test_parity[[]mobilenet_v2-ort_torchscript-all_images[]]*",
            "mobilenet_v2 / ort_torchscript vs its golden, over 16 images: tap 'logits': "
            "top5_overlap 0.988 < 0.99",
            "  images where top-5 differs: chelsea (0.8)",
        ]
    )
    # Count in the failure reports only: with CI set, pytest does not truncate the short
    # summary lines, which then repeat the message.
    reports = out.split("short test summary info")[0]
    assert reports.count("<- first") == 2  # torch and ort_torchscript on chelsea
    assert "Traceback" not in out
    with np.load(obtained) as data:
        assert data["logits"].shape == (1000,)
    # The ids are real: --lf re-selects exactly the three failures.
    again = run(*MODEL, *ORT, *options, "--lf", "--collect-only", "-q")
    failed = [line for line in again.stdout.lines if "test_parity[" in line]
    assert sorted(line.split("[")[1] for line in failed) == [
        "mobilenet_v2-ort_torchscript-all_images]",
        "mobilenet_v2-ort_torchscript-chelsea]",
        "mobilenet_v2-torch-chelsea]",
    ]


def test_update_goldens_prints_what_moved_and_fails_the_tests_it_rewrote(run: Run, tmp_path: Path):
    goldens = golden_copy(tmp_path)
    move_logits(goldens)
    options = ["--parity-runtimes", "torch", "--parity-goldens", str(goldens), "-k", "chelsea"]
    result = run(*MODEL, *options, "--parity-update-goldens")
    # Like pytest-regressions' --force-regen: a regenerating run is never green.
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*parity: updated goldens of mobilenet_v2*",
            "mobilenet_v2: provenance unchanged",
            "*logits*yes*",
            f"wrote {goldens / 'mobilenet_v2'}",
            "*goldens of mobilenet_v2 were rewritten by --parity-update-goldens*",
        ]
    )
    assert "features.17" in result.stdout.str()  # every tap is listed, moved or not
    # The rewritten goldens are fresh (this raises if not) and hold torch's logits again:
    # what the next run checks against.
    store = Session(RunConfig(model="mobilenet_v2", goldens=goldens)).goldens
    logits = store.record("chelsea", "logits").full
    committed = GoldenStore(GOLDENS, "mobilenet_v2").record("chelsea", "logits").full
    assert logits is not None and committed is not None
    np.testing.assert_allclose(logits, committed, rtol=0, atol=1e-5 * np.abs(committed).max())


@pytest.fixture(scope="module")
def torchscript_cached(session_for: Callable[[str], Session]) -> None:
    """mobilenet_v2's TorchScript ONNX export in this session's cache (module-scoped: see
    ``shipped_onnx``)."""
    session_for("mobilenet_v2").artifact(VARIANTS["ort_torchscript"])


@pytest.mark.parametrize("cache", ["warm", pytest.param("cold", marks=pytest.mark.heavy)])
def test_xdist_workers_export_once_and_write_one_merged_report(
    run: Run,
    pytester: pytest.Pytester,
    tmp_path: Path,
    parity_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    cache: str,
    torchscript_cached: None,
):
    """``-n 2``: one merged report; no -n goldens update. On a cold artifact cache (heavy;
    the cache's lock itself: test_concurrency.py) one export; on this session's (warm)
    none: the workers read the cached artifact."""
    from parity.scaffold import init_project

    init_project(pytester.path)  # a user's project, as `parity init` lays it out
    folder = tmp_path / "cache"
    shutil.copytree(parity_cache / "weights", folder / "weights")  # weights are not artifacts
    if cache == "warm":
        (folder / "reference").symlink_to(parity_cache / "reference")
        # The session's artifacts, each entry linked, but an exports.log of its own: under
        # `make test` another xdist worker exports into the session's cache meanwhile.
        for entry in (parity_cache / "artifacts").glob("*/*"):
            if entry.is_dir():
                (folder / "artifacts" / entry.parent.name).mkdir(parents=True, exist_ok=True)
                (folder / "artifacts" / entry.parent.name / entry.name).symlink_to(entry)
    log = folder / "artifacts" / "exports.log"
    before = log.read_text().splitlines() if log.is_file() else []
    monkeypatch.setenv("PARITY_CACHE_DIR", str(folder))
    report = tmp_path / "report"
    # --dist each: both workers run every test, so both need the artifact at once.
    result = run("-n", "2", "--dist", "each", *MODEL, *ORT, "--parity-report", str(report),
                 "-k", "chelsea")  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert XDIST_ADVICE in " ".join(result.stdout.str().split()), result.stdout.str()[:2000]
    exports = log.read_text().splitlines()[len(before) :] if log.is_file() else []
    if cache == "cold":
        assert len(exports) == 1 and exports[0].startswith("mobilenet_v2/onnx_torchscript-")
    else:
        assert exports == [], exports
    (model,) = json.loads((report / "report.json").read_text())["models"]
    ran = {(v["name"], v["mode"]) for v in model["variants"]}
    assert ran == {("torch", "golden"), ("ort_torchscript", "golden")}
    assert model["passed"] is True
    assert model["config"] == str(pytester.path / "parity.toml")
    refused = run("-n", "2", *MODEL, *ORT, "--parity-update-goldens")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*--parity-update-goldens*cannot run under pytest-xdist*"])


@pytest.fixture(scope="module")
def shipped_onnx(session_for, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A good and a broken (features.7 perturbed) copy of mobilenet_v2's ONNX export.

    Module-scoped on purpose: it imports onnx before any ``pytester`` test starts. pytester
    drops the modules a test imported when the test ends, and onnx's C++ extension cannot
    be imported a second time (the next ``import onnx`` in this process aborts it).
    """
    from parity.faults import perturb_onnx_conv
    from parity.variants import VARIANTS

    exported = session_for("mobilenet_v2").artifact(VARIANTS["ort_dynamo"]).path
    folder = tmp_path_factory.mktemp("shipped")
    good, broken = folder / "good.onnx", folder / "broken.onnx"
    good.write_bytes(exported.read_bytes())
    perturb_onnx_conv(exported, broken, "features.7")
    return good, broken


def test_files_listed_in_tool_parity_are_tests_too(
    run: Run, pytester: pytest.Pytester, shipped_onnx: tuple[Path, Path]
):
    """[tool.parity] artifacts: one generated test per shipped file, checked vs torch and vs
    the goldens like the built-in variants, in the report too; a broken one fails."""
    for path in shipped_onnx:
        shutil.copyfile(path, pytester.path / path.name)
    (pytester.path / "parity.toml").write_text(
        'models = ["mobilenet_v2"]\n'
        'artifacts = [{path = "good.onnx"}, {path = "broken.onnx", runtime = "onnxruntime"}]\n'
    )
    result = run(*MODEL, *ORT, "-v", "-k", "shipped", "--parity-report", "report")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_parity[[]mobilenet_v2-shipped-good.onnx[]] PASSED*",
            "*test_parity[[]mobilenet_v2-shipped-broken.onnx[]] FAILED*",
            "*broken.onnx: first divergent tap 'features.7'*",
        ]
    )
    (model,) = json.loads((pytester.path / "report/report.json").read_text())["models"]
    checks = {
        (Path(v["artifact"]["path"]).name, v["mode"]): (v["status"], v["first_divergent_tap"])
        for v in model["variants"]
    }
    assert checks == {
        ("good.onnx", "live"): ("pass", None),
        ("good.onnx", "golden"): ("pass", None),
        ("broken.onnx", "live"): ("fail", "features.7"),
        ("broken.onnx", "golden"): ("fail", "features.7"),
    }


def test_xdist_scopes_group_a_models_backend():
    """Under -n (load), a model's generated tests of one backend are one scheduling unit."""
    suite = "/venv/parity/pytest_suite.py::test_parity"
    assert backend_scope(f"{suite}[mobilenet_v2-ort_dynamo-chelsea]") == "mobilenet_v2-onnxruntime"
    assert backend_scope(f"{suite}[mobilenet_v2-ort_dynamo_noopt-all_images]") == (
        "mobilenet_v2-onnxruntime"
    )
    assert backend_scope(f"{suite}[my-net-litert_fp16-a-b]") == "my-net-litert"
    assert backend_scope(f"{suite}[mobilenet_v2-torch-chelsea]") == "mobilenet_v2-torch"
    assert backend_scope(f"{suite}[mynet-shipped-model.tflite]") == "mynet-shipped"
    assert backend_scope("tests/test_x.py::test_other[mobilenet_v2-ort_dynamo-b]") is None
