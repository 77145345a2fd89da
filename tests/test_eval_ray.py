"""``parity eval --engine ray``: a local Ray cluster (2 CPUs, a 400 MB object store) gives
the local engine's numbers, and an actor killed mid-run loses no image.

Each Ray run is a subprocess (its cluster shut down with it; its driver's imports
checked); a run takes 1-2 minutes on 2 busy cores (actors import their framework), so the
equality run with LiteRT is heavy and the kill test is the default tier's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from parity.cli import main
from parity.evaluate import EvalConfig, EvalResult, evaluate
from parity.weights import class_names
from parity.zoo import get_card

MODEL = "mobilenet_v2"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "images"

SCRIPT = """
import json, sys
from pathlib import Path
from parity.evaluate import EvalConfig
from parity.evaluate.ray_engine import RayOptions, evaluate_ray
root, runtimes, batch = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
config = EvalConfig(Path(root), "mobilenet_v2", runtimes, batch_size=batch)
options = RayOptions(num_cpus=2, object_store_memory=400 << 20)
result = evaluate_ray(config, options, progress=lambda m: print("progress:", m, flush=True))
frameworks = ("torch", "tensorflow", "keras", "onnxruntime", "ai_edge_litert")
loaded = [m for m in frameworks if m in sys.modules]
print("result:", json.dumps({"loaded": loaded, "result": result.to_dict()}), flush=True)
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, parity_cache: Path) -> Path:
    """The 16 fixture images in 3 class folders (numeric names: class indices 0-2).

    The card's class names are cached first (torchvision's metadata: read once with torch,
    here), so the drivers below import no framework."""
    class_names(get_card(MODEL))
    root = tmp_path_factory.mktemp("ray-data")
    for i, image in enumerate(sorted(FIXTURES.iterdir())):
        (root / str(i % 3)).mkdir(exist_ok=True)
        (root / str(i % 3) / image.name).write_bytes(image.read_bytes())
    return root


def run_ray(
    root: Path, runtimes: list[str], batch: int, env: dict[str, str] | None = None,
    on_line: object = None,
) -> tuple[dict[str, object], list[str]]:  # fmt: skip
    """The Ray engine in a subprocess: (its JSON line, its progress lines)."""
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(root), ",".join(runtimes), str(batch)],
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    errors: list[str] = []
    drain = threading.Thread(target=lambda: errors.extend(process.stderr or []), daemon=True)
    drain.start()
    lines, data = [], None
    for line in process.stdout or []:
        if line.startswith("result: "):
            data = json.loads(line.removeprefix("result: "))
        else:
            lines.append(line.strip())
            if callable(on_line):
                on_line(line.strip())
    code = process.wait(timeout=600)
    drain.join(timeout=10)
    assert code == 0 and data is not None, "".join(errors)[-3000:]
    return data, lines


@pytest.mark.heavy
@pytest.mark.onnxruntime
@pytest.mark.litert
def test_ray_engine_gives_the_local_engines_numbers(folder: Path):
    """ONNX Runtime and LiteRT over Ray: the local engine's result to the last flip margin
    (uneven batches: 6 + 6 + 4), with no framework in the driver."""
    runtimes = ["ort_dynamo", "litert_fp32"]
    local = evaluate(EvalConfig(folder, MODEL, runtimes, batch_size=6))
    data, lines = run_ray(folder, runtimes, 6)
    assert data["loaded"] == []
    ray = EvalResult.from_dict(data["result"])  # type: ignore[arg-type]
    assert [s.name for s in ray.scores] == ["torch", *runtimes]
    assert all(s.images == 16 and s.error is None for s in ray.scores)
    assert ray.comparable() == local.comparable()
    for name in ("torch", *runtimes):  # every variant ran in its own actor process
        assert any(re.fullmatch(rf"progress: {name}: actor pid \d+ on \w+", x) for x in lines)


@pytest.mark.onnxruntime
def test_an_actor_killed_mid_run_loses_no_image(folder: Path):
    """SIGKILL the ONNX Runtime actor while it holds a batch (it hangs on its 3rd batch
    until killed): Ray restarts it, the batch is retried, all 16 images are counted."""
    killed: list[int] = []

    def kill_first(line: str) -> None:
        found = re.fullmatch(r"progress: ort_dynamo: actor pid (\d+) on \w+", line)
        if found and not killed:
            killed.append(int(found.group(1)))
            os.kill(killed[0], signal.SIGKILL)

    env = {"PARITY_RAY_FAULT": "ort_dynamo:3"}
    before = set(Path(tempfile.gettempdir()).glob("parity-ray-*"))
    data, lines = run_ray(folder, ["ort_dynamo"], 2, env, kill_first)
    assert data["loaded"] == []
    result = EvalResult.from_dict(data["result"])  # type: ignore[arg-type]
    torch, ort = result.scores
    assert (torch.images, torch.error, ort.images, ort.error) == (16, None, 16, None)
    assert (ort.agree, ort.flips) == (16, [])
    pids = [int(m.group(1)) for x in lines if (m := re.search(r"ort_dynamo: actor pid (\d+)", x))]
    assert killed and pids[0] == killed[0] and len(set(pids)) == 2, lines  # a new actor
    # no artifact folder left: the killed actor's was removed by the one that replaced it
    assert set(Path(tempfile.gettempdir()).glob("parity-ray-*")) <= before


@pytest.mark.heavy
@pytest.mark.onnxruntime
def test_an_actor_that_dies_on_every_attempt_fails_its_variant(folder: Path):
    """A crash loop (the actor SIGKILLs itself on batch 2 at every attempt): after
    CRASH_LIMIT deaths the batch fails its variant, naming the images; torch and the
    other variant are whole."""
    env = {"PARITY_RAY_FAULT": "ort_dynamo:2:kill"}
    data, _ = run_ray(folder, ["ort_dynamo", "ort_torchscript"], 6, env)
    torch, crashed, other = EvalResult.from_dict(data["result"]).scores  # type: ignore[arg-type]
    assert (torch.images, torch.error, other.images, other.error) == (16, None, 16, None)
    assert crashed.images == 0 and crashed.error == (
        "onnxruntime actor died 2 times while running model.onnx on images 13-16 of 16"
    )


def test_address_without_the_ray_engine_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], folder: Path
):
    code = main(["eval", "--data", str(folder), "--address", "auto"])
    err = capsys.readouterr().err
    assert code == 2 and "use it with --engine ray" in err and len(err.strip().splitlines()) == 1
