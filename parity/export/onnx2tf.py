"""The onnx2tf exporters (run in the torch worker): convert in the converter environment,
then locate the card's taps in each file.

``onnx2tf_fp32`` runs ``python -m onnx2tf`` once in the onnx2tf environment on the card's
TorchScript ONNX export: ``-ois input:1,C,H,W`` makes every shape static (``-b 1`` fixes
only the input's batch axis, and onnx2tf then mis-transposes mobilenet_v2's first residual
Add: "Depth of input (56) is not a multiple of input depth of filter (24)" at
features.4), ``-odrqt`` adds the
dynamic-range file to the fp32 and fp16 files onnx2tf always writes, ``-n`` keeps only its
errors. onnx2tf rewrites its input file (onnxsim), so it converts a copy of the cached
export. onnx2tf checks its conversion on sample images it downloads when they are not in
its working folder; parity writes the card's calibration images there under that file
name, so nothing is downloaded (the environment runs with proxies that lead nowhere).
``onnx2tf_fp16`` and ``onnx2tf_dynamic`` copy their file from that run's folder.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parity import lazy
from parity.backends.litert_torch.locate import located
from parity.backends.onnx2tf import MODES
from parity.converters import spec
from parity.converters.environment import run_converter
from parity.paths import find_project
from parity.tapmatch import TapMapEntry
from parity.tolerances import TolerancePolicy

if TYPE_CHECKING:
    from parity.artifacts import BuildContext

#: The sample images onnx2tf reads from its working folder (else downloads): NHWC float32.
SAMPLES = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: The folder (beside the fp32 file) holding onnx2tf's run: its log and every mode's file.
RUN = "onnx2tf"
_WHAT = "TFLite made by onnx2tf"


def export_fp32(ctx: BuildContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Convert the card's TorchScript ONNX export with onnx2tf; ``out`` is its fp32 file."""
    converter = spec("onnx2tf")
    work = out.parent / RUN
    work.mkdir(exist_ok=True)
    onnx = work / "model.onnx"  # onnx2tf rewrites its input (onnxsim): never the cached one
    shutil.copyfile(ctx.artifact("onnx_torchscript").path, onnx)
    samples = ctx.calibration_batch()[:20].transpose(0, 2, 3, 1)
    np.save(work / SAMPLES, np.ascontiguousarray(samples, dtype=np.float32))
    shape = ",".join(map(str, (1, *ctx.card.input_shape[1:])))
    args = ["-m", "onnx2tf", "-i", onnx.name, "-o", "tf", "-ois", f"input:{shape}", "-odrqt", "-n"]
    seconds = run_converter(converter, args, work, work / "onnx2tf.log", converter.timeout)
    made = {mode: work / name for mode, (name, *_) in MODES.items()}
    made["fp32"] = out
    for mode, path in made.items():
        shutil.move(work / "tf" / MODES[mode][0], path)
    shutil.rmtree(work / "tf")  # the SavedModel: parity checks the TFLite files
    for scratch in (work / SAMPLES, onnx):
        scratch.unlink()
    return {
        "exporter": f"onnx2tf ({converter.description}; {' '.join(args[1:])})",
        "converter": {
            "environment": converter.key(),
            "convert_seconds": round(seconds, 3),
            "tflite_bytes": {mode: path.stat().st_size for mode, path in made.items()},
        },
        **located(ctx, out, "onnx2tf_fp32", _WHAT, _fp32_budget(ctx), module_paths=False),
    }


def _fp32_budget(ctx: BuildContext) -> Callable[[str], float | None]:
    """A tap's fp32 max_abs_norm budget: onnx2tf names no torch module, so taps of one
    shape are told apart by value (only one within budget, the others 10x over)."""
    policy = TolerancePolicy.load(find_project().tolerances)
    return lambda tap: policy.budget(ctx.card.name, "onnx2tf_fp32", tap).limits.get("max_abs_norm")


def export_mode(ctx: BuildContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Take ``options["mode"]``'s file from the onnx2tf run and locate the taps in it."""
    mode = str(options["mode"])
    fp32 = ctx.artifact("onnx2tf_fp32")
    shutil.copyfile(fp32.path.parent / RUN / MODES[mode][0], out)
    # The files of one run share their ops' names, though not the constants fused into a
    # tensor's name: each tap is the tensor whose first name (before ';') is that of the
    # tensor located in the fp32 file (by value there, where quantisation cannot blur it).
    # Not the output, nor a tap kept without its axes of size 1: those are found again.
    found = fp32.metadata["tap_matching"]
    reshaped = fp32.metadata["runner_options"]["tap_shapes"]
    names = _first_names(out)
    named = {
        m["tap"]: (
            TapMapEntry(names[first], m["layout"]),
            f"by its name in the fp32 file of this conversion ({m['how']} there)",
        )
        for m in found
        if m["tensor"] and m["how"] != "final output" and m["tap"] not in reshaped
        and (first := m["tensor"].split(";")[0]) in names
    }  # fmt: skip
    metadata = located(ctx, out, f"onnx2tf_{mode}", _WHAT, explicit=named, module_paths=False)
    return {
        "exporter": f"onnx2tf {MODES[mode][2]} file of the onnx2tf_fp32 run",
        "converter": {"tflite_bytes": out.stat().st_size},
        **metadata,
    }


def _first_names(path: Path) -> dict[str, str]:
    """First ``;``-segment -> tensor name, for the segments only one tensor of ``path`` has."""
    interpreter = lazy.require("ai_edge_litert.interpreter").Interpreter(model_path=str(path))
    full = [str(d["name"]) for d in interpreter.get_tensor_details()]
    firsts = Counter(name.split(";")[0] for name in full)
    return {name.split(";")[0]: name for name in full if firsts[name.split(";")[0]] == 1}
