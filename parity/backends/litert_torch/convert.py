"""The litert-torch exporters (run in the torch worker): convert, quantise, locate the taps.

* ``litert_torch_fp32``: ``litert_torch.convert(module, (zeros(card input),))``, batch 1,
  the torch (NCHW) input layout kept (the converter adds the transpose inside).
* ``litert_torch_<recipe>``: an AI Edge Quantizer recipe applied to the fp32 file:
  ``fp16`` weight-only float16 (FLOAT_CASTING), ``dynamic`` ``dynamic_wi8_afp32``, ``int8``
  ``static_wi8_ai8`` calibrated on the card's calibration set (its input and output are
  int8: the runner quantises the float batch and dequantises the output).

Every file records where the card's taps are (:mod:`.locate`), from one run of the
file and of the torch module on the first calibration image.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity import lazy
from parity.backends.litert_torch.locate import located
from parity.errors import ParityError
from parity.quiet import quiet

if TYPE_CHECKING:
    from parity.backends import ExportContext


def export_fp32(ctx: ExportContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Convert the card's torch module to ``out`` with litert-torch (fp32)."""
    torch = lazy.torch()
    module = ctx.model().module
    start = time.perf_counter()
    with quiet():
        litert_torch = lazy.require("litert_torch")
        edge = litert_torch.convert(module, (torch.zeros((1, *ctx.card.input_shape[1:])),))
        edge.export(str(out))
    seconds = time.perf_counter() - start
    return {
        "exporter": f"litert_torch.convert (litert-torch {lazy.package_version('litert-torch')})",
        "converter": {"convert_seconds": round(seconds, 3), "tflite_bytes": out.stat().st_size},
        **located(ctx, out, "litert_torch_fp32"),
    }


def _recipe(name: str) -> Any:
    recipe = lazy.require("ai_edge_quantizer.recipe")
    if name == "dynamic":
        return recipe.dynamic_wi8_afp32()
    if name == "int8":
        return recipe.static_wi8_ai8()
    if name == "fp16":
        qtyping = lazy.require("ai_edge_quantizer.qtyping")
        manager = lazy.require("ai_edge_quantizer.recipe_manager").RecipeManager()
        manager.add_weight_only_config(
            regex=".*",
            operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
            num_bits=16,
            algorithm_key=lazy.require(
                "ai_edge_quantizer.algorithm_manager"
            ).AlgorithmName.FLOAT_CASTING,
        )
        return manager.get_quantization_recipe()
    raise ParityError(f"unknown AI Edge Quantizer recipe {name!r}; known: fp16, dynamic, int8")


def export_quantized(ctx: ExportContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Apply ``options["recipe"]`` to the cached fp32 file with AI Edge Quantizer."""
    source = ctx.artifact("litert_torch_fp32")
    quantizer = lazy.require("ai_edge_quantizer.quantizer")
    start = time.perf_counter()
    images = 0
    with quiet():
        qt = quantizer.Quantizer(source.path.read_bytes())
        qt.load_quantization_recipe(_recipe(str(options["recipe"])))
        calibration = None
        if qt.need_calibration:
            batch = ctx.calibration_batch()
            images = len(batch)
            interpreter = lazy.require("ai_edge_litert.interpreter").Interpreter(
                model_path=str(source.path)
            )
            ((signature, spec),) = interpreter.get_signature_list().items()
            (name,) = spec["inputs"]
            samples = [{name: batch[i : i + 1]} for i in range(images)]
            calibration = qt.calibrate({signature: samples}, num_threads=2)
        content = qt.quantize(calibration, enable_progress_report=False).quantized_model
    seconds = time.perf_counter() - start
    out.write_bytes(bytes(content))
    return {
        "exporter": f"AI Edge Quantizer {lazy.package_version('ai-edge-quantizer')} recipe "
        f"'{options['recipe']}' on the litert-torch fp32 file",
        "converter": {
            "recipe": options["recipe"],
            "calibration_images": images,
            "quantize_seconds": round(seconds, 3),
            "tflite_bytes": len(content),
        },
        **located(ctx, out, f"litert_torch_{options['recipe']}"),
    }
