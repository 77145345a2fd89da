"""Dataset-level parity (`parity eval`, `parity eval-merge`) and the digits model support.

The default suite uses mobilenet_v2 with its calibrated weights (no training) on an
ImageFolder made from the 16 fixture images, labelled so that torch is right on exactly
half of them. The digits end-to-end test trains a model (~2 min on 2 busy cores): heavy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parity.cli import main
from parity.errors import FixtureError, ParityError, WeightsError
from parity.evaluate import (
    EvalResult,
    VariantScore,
    merge_results,
    parse_shard,
    scan_image_folder,
    score_batch,
    select_indices,
    shard_indices,
)
from parity.harness import Session
from parity.paths import cache_dir
from parity.worker import FAULT_ENV

MODEL = "mobilenet_v2"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("parity: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def tiny_png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)
    return path


# -- a labelled folder from the fixtures, with known answers ---------------------------


@pytest.fixture(scope="module")
def labelled(
    session_for: Callable[[str], Session], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, np.ndarray]:
    """ImageFolder of the 16 fixtures, folders named by ImageNet class name.

    Even-numbered fixtures go into the folder of torch's prediction, odd ones into the
    next class: torch's accuracy is exactly 50%. Returns (root, torch predictions).
    """
    from parity.weights import class_names

    session = session_for(MODEL)
    names = class_names(session.card)
    assert names is not None
    predicted = session.reference["logits"].argmax(axis=1)
    root = tmp_path_factory.mktemp("labelled")
    for i, (fixture, label) in enumerate(zip(session.fixtures, predicted, strict=True)):
        target = int(label) if i % 2 == 0 else (int(label) + 1) % len(names)
        folder = root / names[target]
        folder.mkdir(exist_ok=True)
        shutil.copy(fixture.path, folder / fixture.path.name)
    return root, predicted


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_eval_on_labelled_fixtures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, labelled: tuple[Path, np.ndarray]
):
    """The table and JSON of an eval (Keras' row: the worker test below)."""
    root, _ = labelled
    out_json = tmp_path / "eval.json"
    code, out, _ = run_cli(
        capsys, "eval", "-q", "--data", str(root), "--model", MODEL,
        "-r", "ort_torchscript", "--json", str(out_json), "--device", "auto",
    )  # fmt: skip
    assert code == 0, out
    assert "images/s" in out
    for text in ("dataset-level parity vs torch", "ort_torchscript", "50.00%"):
        assert text in out
    assert "classes by class names" in out
    data = json.loads(out_json.read_text())
    torch_row, *runtimes = data["variants"]
    assert (torch_row["name"], torch_row["images"], torch_row["correct"]) == ("torch", 16, 8)
    assert torch_row["images_per_s"] > 0  # --device auto: the GPU when there is one
    assert torch_row["accuracy"] == 0.5 and torch_row["agree"] == 16
    # fp32 ONNX Runtime (taps off, one batch): torch's answers on every image.
    (row,) = runtimes
    assert (row["name"], row["error"], row["images"]) == ("ort_torchscript", None, 16)
    assert (row["correct"], row["agree"], row["flips"]) == (8, 16, [])
    assert data["dataset"]["mapping"] == "class names" and data["dataset"]["total"] == 16
    assert data["weights"]["source"] == "calibrated" and data["shard"] is None


@pytest.mark.torch
@pytest.mark.onnxruntime
@pytest.mark.keras
def test_eval_runs_variants_in_workers_and_a_crash_is_a_failed_variant(
    tmp_path: Path, labelled: tuple[Path, np.ndarray]
):
    """Each backend runs in a worker over the preprocessed images (in chunks): the
    parent imports no framework, and a SIGKILLed worker fails its variant only."""
    root, _ = labelled  # the fixture also caches the class names: no torch below
    script = f"""
import json, sys
from pathlib import Path
from parity.evaluate import EvalConfig, evaluate
config = EvalConfig(Path({str(root)!r}), "mobilenet_v2",
                    ["ort_torchscript", "ort_dynamo", "keras"], batch_size=6)
result = evaluate(config)
loaded = [m for m in ("torch", "tensorflow", "keras", "onnxruntime") if m in sys.modules]
print(json.dumps({{"loaded": loaded, "result": result.to_dict()}}))
"""
    env = dict(os.environ, PARITY_WORKER_FAULT="ort_dynamo:running")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert data["loaded"] == []
    scores = {v["name"]: v for v in data["result"]["variants"]}
    assert (scores["torch"]["images"], scores["torch"]["correct"]) == (16, 8)
    for name in ("ort_torchscript", "keras"):  # ort_torchscript: in a fresh worker
        score = scores[name]
        assert (score["error"], score["correct"], score["agree"], score["flips"]) == (
            None,
            8,
            16,
            [],
        )
    crashed = scores["ort_dynamo"]
    assert crashed["images"] == 0 and crashed["error"] == (
        "ONNX Runtime worker crashed (SIGKILL) while running model.onnx on images 1-6 of 16"
    )


@pytest.mark.torch
def test_a_cuda_variant_without_a_gpu_is_not_applicable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, labelled: tuple[Path, np.ndarray]
):
    from parity.backends.torch.runner import cuda_unavailable

    reason = cuda_unavailable()
    if reason is None:
        pytest.skip("a GPU is present: the variant runs")
    out_json = tmp_path / "eval.json"
    code, out, _ = run_cli(capsys, "eval", "-q", "--data", str(labelled[0]), "--model", MODEL,
                           "-r", "torch_cuda_fp32", "--json", str(out_json))  # fmt: skip
    assert code == 0, out
    assert "n/a: no CUDA GPU on this machine" in " ".join(out.split())
    (_, cuda) = json.loads(out_json.read_text())["variants"]
    assert (cuda["name"], cuda["error"], cuda["images"]) == ("torch_cuda_fp32", None, 0)
    assert cuda["not_applicable"] == reason


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_shards_merge_to_the_unsharded_result(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, labelled: tuple[Path, np.ndarray]
):
    root, _ = labelled
    common = ("eval", "-q", "--data", str(root), "--model", MODEL, "-r", "ort_torchscript")
    common += ("--limit", "11", "--batch-size", "4")
    whole, s0, s1, merged = (tmp_path / f"{n}.json" for n in ("whole", "s0", "s1", "merged"))
    assert run_cli(capsys, *common, "--json", str(whole))[0] == 0
    assert run_cli(capsys, *common, "--shard", "0/2", "--json", str(s0))[0] == 0
    assert run_cli(capsys, *common, "--shard", "1/2", "--json", str(s1))[0] == 0
    code, out, _ = run_cli(capsys, "eval-merge", str(s1), str(s0), "--json", str(merged))
    assert code == 0 and "11 of 16 images" in out
    shard0 = json.loads(s0.read_text())
    assert shard0["shard"] == {"k": 0, "n": 2} and len(shard0["indices"]) == 6
    read = [EvalResult.from_dict(json.loads(p.read_text())) for p in (whole, merged)]
    assert read[0].comparable() == read[1].comparable()
    assert read[0].score("torch").correct == read[1].score("torch").correct

    # The same shard twice, a missing shard, shards of different evaluations: exit 2.
    code, _, err = run_cli(capsys, "eval-merge", str(s0), str(s0))
    assert_one_line_error(code, err, "overlap on 6 images", "s0.json")
    code, _, err = run_cli(capsys, "eval-merge", str(s0))
    assert_one_line_error(code, err, "miss 5 of 11 images", "shards 1/2 not given")
    for field, value, message in [
        (("weights", "sha256"), "0" * 64, "disagree on weights sha256"),
        (("dataset", "limit"), 12, "disagree on limit"),
        (("dataset", "sha256"), "f" * 64, "disagree on dataset listing sha256"),
        (("preprocess_sha256",), "e" * 64, "disagree on preprocessing sha256"),
    ]:
        other = json.loads(s1.read_text())
        target = other
        for key in field[:-1]:
            target = target[key]
        target[field[-1]] = value
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(other))
        code, _, err = run_cli(capsys, "eval-merge", str(s0), str(bad))
        assert_one_line_error(code, err, message, "bad.json")
    other = json.loads(s1.read_text())
    other["variants"] = other["variants"][:1]
    (tmp_path / "bad.json").write_text(json.dumps(other))
    code, _, err = run_cli(capsys, "eval-merge", str(s0), str(tmp_path / "bad.json"))
    assert_one_line_error(code, err, "disagree on variants")
    (tmp_path / "junk.json").write_text("{}")
    code, _, err = run_cli(capsys, "eval-merge", str(tmp_path / "junk.json"))
    assert_one_line_error(code, err, "junk.json", "not a parity eval result")


# -- bad datasets: one-line errors, exit 2 ---------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize(
    ("layout", "fragments"),
    [
        ({"0/a.png": "image", "1/notes.txt": "text"}, ["notes.txt", "not an image file"]),
        ({"0/a.png": "image", "1/": None}, ["empty class folder"]),
        ({"0/a.png": "image", "README.md": "text"}, ["README.md", "root of an ImageFolder"]),
        ({"0/a.png": "image", "1/b.png": "garbage"}, ["b.png", "not an image file PIL"]),
        ({"cats/a.png": "image", "dogs/b.png": "image"}, ["cannot map 2 class folders"]),
    ],
    ids=["non-image", "empty-class", "root-file", "corrupt-image", "unmappable"],
)
def test_bad_dataset_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, layout: dict, fragments: list[str]
):
    for name, content in layout.items():
        path = tmp_path / "data" / name
        if content is None:
            path.mkdir(parents=True)
        elif content == "image":
            tiny_png(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
    code, _, err = run_cli(
        capsys, "eval", "-q", "--data", str(tmp_path / "data"), "--model", MODEL, "-r", "torch"
    )
    assert_one_line_error(code, err, *fragments)


@pytest.mark.torch
def test_device_cuda_without_a_gpu_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], labelled: tuple[Path, np.ndarray]
):
    from parity.backends.torch.runner import cuda_unavailable

    reason = cuda_unavailable()
    if reason is None:
        pytest.skip("a GPU is present")
    code, _, err = run_cli(
        capsys, "eval", "-q", "--data", str(labelled[0]), "--model", MODEL, "--device", "cuda"
    )
    assert_one_line_error(code, err, "--device cuda: no CUDA GPU on this machine")


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    code, _, err = run_cli(capsys, "eval", "--data", str(tmp_path / "nope"), "--shard", "2/2")
    assert_one_line_error(code, err, "--shard '2/2'", "0 <= k < N")
    code, _, err = run_cli(capsys, "eval-merge", str(tmp_path / "none.json"))
    assert_one_line_error(code, err, "none.json", "no such eval result file")


# -- the numpy core --------------------------------------------------------------------


def test_class_mapping_rules(tmp_path: Path):
    names = [f"class{i}" for i in range(5)]
    numeric = tmp_path / "numeric"
    for label in ("3", "0"):
        tiny_png(numeric / label / "x.png")
    folder = scan_image_folder(numeric, 10)
    assert folder.mapping == "numeric folder names" and folder.classes == {"0": 0, "3": 3}
    assert [(i.name, i.label, i.index) for i in folder.images] == [
        ("0/x.png", 0, 0),
        ("3/x.png", 3, 1),
    ]

    by_name = tmp_path / "by_name"
    tiny_png(by_name / "class4" / "a.png")
    assert scan_image_folder(by_name, 5, names).classes == {"class4": 4}

    listed = tmp_path / "listed"
    tiny_png(listed / "b" / "a.png")
    (listed / "classes.txt").write_text("c\nb\na\n")
    assert scan_image_folder(listed, 3).classes == {"b": 1}
    synsets = tmp_path / "synsets"
    tiny_png(synsets / "n02" / "a.png")
    (synsets / "synsets.txt").write_text("n01 tench, Tinca tinca\nn02 goldfish\n")
    assert scan_image_folder(synsets, 2).mapping == "synsets.txt"
    assert scan_image_folder(synsets, 2).classes == {"n02": 1}
    with pytest.raises(FixtureError, match="lists 2 classes, the model has 3"):
        scan_image_folder(synsets, 3)

    ordered = tmp_path / "ordered"
    for label in ("zebra", "ant"):
        tiny_png(ordered / label / "a.png")
    assert scan_image_folder(ordered, 2).classes == {"ant": 0, "zebra": 1}
    with pytest.raises(FixtureError, match="classes.txt or synsets.txt"):
        scan_image_folder(ordered, 3)


def test_selection_and_sharding():
    assert select_indices(10) == list(range(10))
    assert select_indices(100, 5) == [0, 25, 50, 74, 99]  # spread over every class
    assert select_indices(3, 5) == [0, 1, 2]
    selected = select_indices(11, 7)
    shards = [shard_indices(selected, (k, 3)) for k in range(3)]
    assert sorted(sum(shards, [])) == selected
    assert parse_shard("1/4") == (1, 4)
    for bad in ("1", "4/4", "-1/2", "a/b", "0/0"):
        with pytest.raises(ParityError):
            parse_shard(bad)


def test_score_batch_counts_and_flips():
    torch_logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.9], [0.0, 0.0, 5.0]], np.float32)
    runtime = np.array([[3.0, 1.0, 0.0], [0.0, 1.9, 2.0], [5.0, 0.0, 0.0]], np.float32)
    score = VariantScore("x")
    score_batch(score, [7, 8, 9], ["a", "b", "c"], np.array([0, 1, 0]), torch_logits, runtime)
    assert (score.images, score.correct, score.agree) == (3, 2, 1)
    assert [(f["index"], f["torch"], f["runtime"]) for f in score.flips] == [(8, 1, 2), (9, 2, 0)]
    assert score.flips[0]["margin"] == pytest.approx(0.1)  # a near-tie
    assert score.flips[1]["margin"] == pytest.approx(5.0)  # a confident answer changed
    assert score.flips[0]["runtime_margin"] == pytest.approx(0.1)


def _synthetic(indices: list[int], shard: tuple[int, int] | None) -> EvalResult:
    """Scores for images ``indices`` of a 10-image dataset: 'rt' flips every 3rd image."""
    torch_score, runtime = VariantScore("torch"), VariantScore("rt")
    labels = np.array([i % 3 for i in indices])
    torch_logits = np.eye(3, dtype=np.float32)[labels] * 2
    runtime_logits = torch_logits.copy()
    runtime_logits[[i % 3 == 0 for i in indices], 1] = 3.0
    names = [f"{i % 3}/{i}.png" for i in indices]
    score_batch(torch_score, indices, names, labels, torch_logits, torch_logits)
    score_batch(runtime, indices, names, labels, torch_logits, runtime_logits)
    return EvalResult(
        "m", {"source": "s", "sha256": "w"}, "p",
        {"root": "r", "sha256": "d", "mapping": "m", "classes": {}, "total": 10, "limit": None,
         "selected": 10},
        {"k": shard[0], "n": shard[1]} if shard else None, indices, [torch_score, runtime],
    )  # fmt: skip


def test_merge_with_flips_equals_whole():
    whole = _synthetic(list(range(10)), None)
    parts = [_synthetic(list(range(k, 10, 3)), (k, 3)) for k in (2, 0, 1)]
    merged = merge_results(parts, ["a", "b", "c"])
    assert merged.comparable() == whole.comparable()
    assert [f["index"] for f in merged.score("rt").flips] == [0, 3, 6, 9]
    assert merged.score("rt").accuracy == whole.score("rt").accuracy == 0.6
    round_trip = EvalResult.from_dict(json.loads(json.dumps(merged.to_dict())))
    assert round_trip.comparable() == merged.comparable()


# -- digits support: the trained weights source and the card's calibration folder -----


def test_card_calibration_folder_is_used(tmp_path: Path):
    from parity.artifacts import ArtifactCache, BuildContext
    from parity.zoo import load_card

    for i in range(3):
        tiny_png(tmp_path / "calib" / f"{i}.png", 40 * i)
    card_text = (Path(__file__).parents[1] / "models" / "resnet18_digits.toml").read_text()
    card_path = tmp_path / "mine.toml"
    card_path.write_text(card_text.replace("{cache}/digits/calibration", str(tmp_path / "calib")))
    card = load_card(card_path)
    context = BuildContext(card, lambda: None, ArtifactCache(tmp_path / "cache"))  # type: ignore[arg-type, return-value]
    batch = context.calibration_batch()
    assert batch.shape == (3, 3, 24, 24)
    assert load_card(Path(__file__).parents[1] / "models" / "resnet18_digits.toml").calibration


@pytest.mark.torch
def test_trained_source_with_a_missing_script_is_a_clear_error():
    from parity.weights import load_model
    from parity.zoo import get_card

    with pytest.raises(WeightsError, match="training script .*nope.py not found"):
        load_model(get_card("resnet18_digits"), "trained:models/digits/nope.py")


@pytest.mark.heavy
@pytest.mark.torch
@pytest.mark.onnxruntime
@pytest.mark.litert
def test_digits_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    """Trains resnet18_digits on first use (~2 min), then evaluates its test split."""
    out_json = tmp_path / "digits.json"
    code, out, _ = run_cli(
        capsys, "eval", "-q", "--data", str(cache_dir() / "digits" / "test"),
        "--model", "resnet18_digits", "-r", "ort_dynamo", "-r", "keras", "-r", "litert_int8",
        "--limit", "90", "--json", str(out_json),
    )  # fmt: skip
    assert code == 0, out
    data = json.loads(out_json.read_text())
    scores = {v["name"]: v for v in data["variants"]}
    assert data["dataset"]["total"] == 360 and data["dataset"]["mapping"] == "numeric folder names"
    assert scores["torch"]["accuracy"] > 0.95
    assert scores["ort_dynamo"]["agree"] == scores["keras"]["agree"] == 90
    assert scores["litert_int8"]["agreement"] > 0.9
    assert len(list((cache_dir() / "digits" / "calibration").glob("*.png"))) == 100


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_a_crashed_reference_fails_every_variant_with_exit_1(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    labelled: tuple[Path, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
):
    """No agreement without the reference: the torch worker SIGKILLed on it is an error
    result for every variant (written, exit 1), not bad input."""
    root, _ = labelled
    monkeypatch.setenv(FAULT_ENV, "reference:running")
    out_json = tmp_path / "eval.json"
    code, out, err = run_cli(
        capsys, "eval", "-q", "--data", str(root), "--model", MODEL,
        "-r", "ort_torchscript", "--json", str(out_json),
    )  # fmt: skip
    assert code == 1, out + err
    assert "Traceback" not in out + err
    crash = "crashed (SIGKILL) while running the torch reference"
    for row in json.loads(out_json.read_text())["variants"]:
        assert row["images"] == 0 and crash in row["error"], row
        assert "the torch reference could not run" in row["error"], row
