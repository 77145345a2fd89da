"""mobilenet_v2 and resnet18 as TFLite files in LiteRT, every variant, per tap.

Real torch reference, real Keras twins, real TFLite conversions (cached per session),
real LiteRT interpreters with XNNPACK on and off, all fixture images. The fault tests
convert twins carrying real porting bugs (Keras BatchNorm epsilon, Keras 'same'
padding) and check the gate names the first tap they reach.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parity.backends import get_exporter
from parity.backends.litert.runner import LiteRTRunner, dequantize, keras_layer_of, quantize
from parity.compare import compare_taps
from parity.errors import ArtifactError, ParityError, RuntimeFailure, TapError
from parity.export.keras.artifact import tap_layers, twin_for
from parity.export.tflite import convert_keras_model, output_layer, representative_batch
from parity.faults import scale_tflite_conv
from parity.harness import Session, make_runner
from parity.taps import Tap
from parity.variants import VARIANTS

pytestmark = [pytest.mark.litert, pytest.mark.keras, pytest.mark.torch]

#: resnet18's TFLite conversions run under ``-m heavy``: its Keras twin (where the
#: architecture matters) is checked by default in test_keras.py.
MODELS = ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.heavy)]
#: Checked by default: fp32 and full int8 (the quantised route: calibration, int8 taps
#: dequantised by the runner), each with XNNPACK on and off.
DEFAULT_VARIANTS = [
    "litert_fp32",
    "litert_fp32_noxnn",
    "litert_int8",
    "litert_int8_noxnn",
]
#: Three more conversions per model (fp16 weights, dynamic range, int8 I/O): `-m heavy`.
HEAVY_VARIANTS = [
    "litert_fp16",
    "litert_fp16_noxnn",
    "litert_dynamic",
    "litert_dynamic_noxnn",
    "litert_int8_io",
    "litert_int8_io_noxnn",
]
ALL_VARIANTS = [
    *DEFAULT_VARIANTS,
    *(pytest.param(name, marks=pytest.mark.heavy) for name in HEAVY_VARIANTS),
]


def test_registries_hold_every_variant():
    litert = [name for name, v in VARIANTS.items() if v.family == "litert"]
    assert sorted(litert) == sorted(DEFAULT_VARIANTS + HEAVY_VARIANTS)
    for name in litert:
        assert VARIANTS[name].options.get("xnnpack", True) is not name.endswith("_noxnn")


@pytest.fixture(scope="module")
def default_runs(module_runs: Callable[..., None]) -> None:
    """mobilenet_v2's default variants run in one prefetch: one Keras worker converts, one
    LiteRT worker runs them all (a prefetch per variant started a worker each)."""
    module_runs("mobilenet_v2", *DEFAULT_VARIANTS)


@pytest.mark.parametrize("variant", ALL_VARIANTS)
@pytest.mark.parametrize("model", MODELS)
def test_every_tap_within_budget(
    session_for: Callable[[str], Session], default_runs: None, model: str, variant: str
):
    session = session_for(model)
    result = session.check(VARIANTS[variant])
    assert result.error is None, result.error
    assert result.verdict is not None
    assert [t.tap.name for t in result.verdict.taps] == [t.name for t in session.card.taps]
    assert result.passed, result.verdict.explain([f.name for f in session.fixtures])
    # Quantised variants are judged by their litert tables, not the fp32 defaults
    # (only the logits' top-1/top-5 may come from the default "*/*/logits").
    if not variant.startswith("litert_fp32"):
        for tap in result.verdict.taps:
            for key, source in tap.budget.sources.items():
                if key not in ("min_top1_agreement", "min_top5_overlap"):
                    assert "/litert_" in source, (tap.tap.name, key, source)


def test_xnnpack_on_and_off_run_different_kernels(session_for: Callable[[str], Session]):
    """Both paths really run: same file, different kernels, so close but not identical."""
    session = session_for("mobilenet_v2")
    outputs = {}
    for name in ("litert_fp32", "litert_fp32_noxnn"):
        variant = VARIANTS[name]
        with make_runner(variant, session.artifact(variant), 2) as runner:
            outputs[name] = runner.run(session.batch, session.taps)
    on, off = outputs["litert_fp32"], outputs["litert_fp32_noxnn"]
    assert not np.array_equal(on["features.17"], off["features.17"])
    for tap in session.taps:
        scale = np.abs(off[tap.name]).max()
        assert np.abs(on[tap.name] - off[tap.name]).max() <= 1e-4 * scale, tap.name


@pytest.mark.parametrize("model", MODELS)
def test_untapped_run_matches_tapped_run(session_for: Callable[[str], Session], model: str):
    """The plain interpreter (no taps) and the preserve-all-tensors one agree bitwise."""
    session = session_for(model)
    variant = VARIANTS["litert_int8"]
    with make_runner(variant, session.artifact(variant), 2) as runner:
        plain = runner.run(session.batch, ())
        tapped = runner.run(session.batch, session.taps)
        assert set(runner._interpreters) == {False, True}
    assert set(plain) == {"output"}
    np.testing.assert_array_equal(plain["output"], tapped["output"])
    np.testing.assert_array_equal(tapped["output"], tapped["logits"])


def test_batch_resize_matches_image_by_image(session_for: Callable[[str], Session]):
    session = session_for("mobilenet_v2")
    variant = VARIANTS["litert_int8"]
    with make_runner(variant, session.artifact(variant), 2) as runner:
        batched = runner.run(session.batch, session.taps)
        singles = [runner.run(session.batch[i : i + 1], session.taps) for i in range(3)]
    for key, value in batched.items():
        np.testing.assert_array_equal(value[:3], np.concatenate([s[key] for s in singles]))


@pytest.mark.parametrize(
    # dynamic range (activations quantised per invoke) converts only under -m heavy, as
    # its budget tests do; fp32 proves the split by default.
    "variant",
    ["litert_fp32", pytest.param("litert_dynamic_noxnn", marks=pytest.mark.heavy)],
)
def test_invokes_of_a_few_images_match_one_invoke_of_all(
    session_for: Callable[[str], Session], monkeypatch: pytest.MonkeyPatch, variant: str
):
    """The batch runs a few images per invoke (memory); the values are one invoke's, bitwise."""
    from parity.backends.litert import runner as litert_runner

    session = session_for("mobilenet_v2")
    # Two whole invokes of 2 images and a short one: split, with a remainder (one invoke
    # holds every intermediate of its images at once: ~70 MiB per image in this process).
    monkeypatch.setattr(litert_runner, "IMAGES_PER_INVOKE", 2)
    batch = session.batch[: 2 * litert_runner.IMAGES_PER_INVOKE + 1]
    artifact = session.artifact(VARIANTS[variant])
    with make_runner(VARIANTS[variant], artifact, 2) as runner:
        chunked = runner.run(batch, session.taps)
    monkeypatch.setattr(litert_runner, "IMAGES_PER_INVOKE", len(batch))
    with make_runner(VARIANTS[variant], artifact, 2) as runner:
        whole = runner.run(batch, session.taps)
        assert runner._batch_sizes == {True: len(batch)}  # one invoke of all
    assert set(chunked) == set(whole)
    for key, value in whole.items():
        np.testing.assert_array_equal(chunked[key], value, err_msg=key)


@pytest.mark.heavy
@pytest.mark.parametrize("xnn", ["", "_noxnn"])
@pytest.mark.parametrize("model", MODELS)
def test_int8_io_dequantisation(session_for: Callable[[str], Session], model: str, xnn: str):
    """int8 I/O, quantised and dequantised by the runner, equals the float-I/O int8 model,
    whose QUANTIZE/DEQUANTIZE ops do the same inside the graph."""
    session = session_for(model)
    runs = {}
    for name in (f"litert_int8{xnn}", f"litert_int8_io{xnn}"):
        variant = VARIANTS[name]
        artifact = session.artifact(variant)
        with make_runner(variant, artifact, 2) as runner:
            runs[name] = runner.run(session.batch, session.taps)
    io_meta = session.artifact(VARIANTS["litert_int8_io"]).metadata["converter"]
    assert io_meta["inputs"][0]["dtype"] == "int8" and io_meta["outputs"][0]["dtype"] == "int8"
    float_io, int8_io = runs[f"litert_int8{xnn}"], runs[f"litert_int8_io{xnn}"]
    for tap in session.taps:  # every int8 activation identical: the input was quantised right
        if tap.name != "logits":
            np.testing.assert_array_equal(float_io[tap.name], int8_io[tap.name], err_msg=tap.name)
    # The output: the DEQUANTIZE kernel and numpy may round the last float bit differently.
    scale = io_meta["outputs"][0]["scale"][0]
    np.testing.assert_allclose(int8_io["output"], float_io["output"], rtol=0, atol=1e-3 * scale)
    assert np.array_equal(int8_io["output"].argmax(1), float_io["output"].argmax(1))


def test_quantize_and_dequantize_follow_tflite():
    detail = {
        "name": "x",
        "dtype": np.int8,
        "quantization": (0.5, -3),
        "quantization_parameters": {
            "scales": np.array([0.5], np.float32),
            "zero_points": np.array([-3]),
            "quantized_dimension": 0,
        },
    }
    x = np.array([-100.0, -1.25, -0.25, 0.25, 0.75, 1.0, 100.0], np.float32)
    q = quantize(x, detail)
    # round half away from zero, then + zero point, then clamp to int8
    np.testing.assert_array_equal(q, np.array([-128, -6, -4, -2, -1, -1, 127], np.int8))
    np.testing.assert_array_equal(dequantize(q, detail), (q.astype(np.float32) + 3) * 0.5)
    per_axis = {
        "name": "w",
        "quantization_parameters": {
            "scales": np.array([1.0, 2.0], np.float32),
            "zero_points": np.array([0, 1]),
            "quantized_dimension": 1,
        },
    }
    w = np.array([[1, 1], [2, 2]], np.int8)
    np.testing.assert_array_equal(dequantize(w, per_axis), [[1.0, 0.0], [2.0, 2.0]])


def test_scaled_stem_conv_in_the_tflite_file_fails_at_stem(
    session_for: Callable[[str], Session], tmp_path: Path
):
    """The converted fp32 file with its stem conv's weights scaled by 1% (the bytes of the
    weight buffer, nothing else changed) fails first at `stem`, far over its budget."""
    session = session_for("mobilenet_v2")
    artifact = session.artifact(VARIANTS["litert_fp32"])
    broken = tmp_path / "scaled.tflite"
    scaled = scale_tflite_conv(artifact.path, broken, "/features.0.", 1.01)
    assert "/features.0.0" in scaled or "/features.0.1" in scaled, scaled
    with LiteRTRunner("litert_fp32", broken, **artifact.metadata["runner_options"]) as runner:
        obtained = runner.run(session.batch, session.taps)
    verdict = compare_taps(
        "mobilenet_v2", "litert_fp32", session.taps, session.reference, obtained, session.policy
    )
    assert verdict.first_failure is not None, verdict.explain()
    assert verdict.first_failure.tap.name == "stem", verdict.explain()
    limit = session.policy.budget("mobilenet_v2", "litert_fp32", "stem").limits["max_abs_norm"]
    assert verdict.first_failure.metrics.max_abs_norm > 10 * limit


#: A porting bug converted like the artifact: a twin build and a TFLite conversion in this
#: process (~25-55 s), under ``-m heavy``. By default the same fault fails at 'stem' at the
#: Keras gate (test_keras.py), and a weight scaled in the converted file at 'stem' here.
@pytest.mark.heavy
@pytest.mark.parametrize(
    ("model", "fault"),
    [
        ("mobilenet_v2", {"bn_epsilon": 1e-3}),
        ("resnet18", {"bn_epsilon": 1e-3}),
        ("mobilenet_v2", {"stride2_padding": "same"}),
    ],
    ids=["mobilenet_v2-bn_eps", "resnet18-bn_eps", "mobilenet_v2-same_padding"],
)
def test_porting_fault_fails_at_the_first_tap_it_reaches(
    session_for: Callable[[str], Session], model: str, fault: dict, tmp_path: Path
):
    """A twin with a real porting bug, converted like the artifact, fails at `stem`:
    the first BatchNorm and the first stride-2 conv sit inside features.0 / conv1."""
    session = session_for(model)
    twin = twin_for(session.context, **fault)
    path = tmp_path / "faulty.tflite"
    path.write_bytes(convert_keras_model(twin.model, "fp32"))
    layers = tap_layers(twin, session.card.taps)
    assert (
        layers == session.artifact(VARIANTS["litert_fp32"]).metadata["runner_options"]["tap_layers"]
    )
    with LiteRTRunner("litert_fp32", path, layers, output_layer=output_layer(twin.model)) as run:
        obtained = run.run(session.batch, session.taps)
    verdict = compare_taps(
        model, "litert_fp32", session.taps, session.reference, obtained, session.policy
    )
    assert not verdict.passed
    assert verdict.first_failure is not None
    assert verdict.first_failure.tap.name == "stem", verdict.explain()
    assert "first divergent tap 'stem'" in verdict.explain()


def test_tensor_names_map_back_to_keras_layers():
    fused = (
        "mobilenet_v2_1/features.3.conv.0.2_1/Relu6;"
        "mobilenet_v2_1/features.3.conv.0.1_1/batchnorm/add_1"
    )
    assert keras_layer_of(fused) == "features.3.conv.0.2"
    assert keras_layer_of("resnet_1/layer1.0.relu-call0_1/Relu;resnet_1/x") == (
        "layer1.0.relu-call0"
    )
    assert keras_layer_of("mobilenet_v2_1/flatten_1/Reshape") == "flatten"
    for unscoped in ("serving_default_input:0", "tfl.quantize", "StatefulPartitionedCall_1:0"):
        assert keras_layer_of(unscoped) is None


def test_fused_layer_is_a_tap_error_naming_tap_and_layer(
    session_for: Callable[[str], Session],
):
    """features.0.0 (the stem conv) is fused with its BN and ReLU6: no tensor of its own."""
    session = session_for("mobilenet_v2")
    path = session.artifact(VARIANTS["litert_fp32"]).path
    conv = Tap("stem_conv", "features.0.0")
    with (
        LiteRTRunner("litert_fp32", path, {"stem_conv": "features.0.0"}) as runner,
        pytest.raises(TapError, match=r"tap 'stem_conv': Keras layer 'features\.0\.0' has no"),
    ):
        runner.run(session.batch[:1], [conv])
    with (
        LiteRTRunner("litert_fp32", path, {}) as runner,
        pytest.raises(TapError, match="no Keras layer is mapped to tap 'stem'"),
    ):
        runner.run(session.batch[:1], session.taps[:1])


def test_truncated_tflite_file_is_a_clear_error(
    session_for: Callable[[str], Session], tmp_path: Path
):
    source = session_for("mobilenet_v2").artifact(VARIANTS["litert_fp32"]).path
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(RuntimeFailure, match=r"truncated\.tflite: LiteRT cannot load it"):
        LiteRTRunner("litert_fp32", truncated).activate()


def test_missing_tflite_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ArtifactError, match=r"missing\.tflite: TFLite file not found"):
        LiteRTRunner("litert_fp32", tmp_path / "missing.tflite").activate()


@pytest.mark.parametrize("mode", ["int8", pytest.param("fp16", marks=pytest.mark.heavy)])
def test_artifact_metadata_records_the_conversion(session_for: Callable[[str], Session], mode: str):
    session = session_for("mobilenet_v2")  # the conversions test_every_tap_within_budget built
    fp32 = session.artifact(VARIANTS["litert_fp32"])
    quantised = session.artifact(VARIANTS[f"litert_{mode}"])
    keras_options = session.cache.get(get_exporter("keras"), session.context).metadata[
        "runner_options"
    ]
    for artifact, converted in ((fp32, "fp32"), (quantised, mode)):
        meta = artifact.metadata
        assert meta["converter"]["mode"] == converted
        assert meta["runner_options"]["tap_layers"] == keras_options["tap_layers"]
        assert meta["runner_options"]["output_layer"] == "classifier.1"
        assert meta["export_seconds"] > 0 and meta["converter"]["tflite_bytes"] == meta["bytes"]
    converter = quantised.metadata["converter"]
    if mode == "fp16":
        assert quantised.size_bytes < 0.55 * fp32.size_bytes
        assert converter["ops"]["DEQUANTIZE"] > 0  # fp16 weights -> fp32
    else:
        assert quantised.size_bytes < 0.3 * fp32.size_bytes
        assert converter["calibration"] == "images"
        assert converter["calibration_images"] == 32
        assert converter["inputs"][0]["dtype"] == "float32"


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["fp32", "fp16", "dynamic", "int8"])
def test_converting_the_cached_saved_model_equals_from_keras_model(
    session_for: Callable[[str], Session], mode: str, tmp_path: Path
):
    """Convert once, quantise many changes no number: the artifact (converted from the
    cached SavedModel) and ``from_keras_model`` on the twin give every tap to the bit."""
    import keras

    session = session_for("mobilenet_v2")
    variant = VARIANTS[f"litert_{mode}"]
    artifact = session.artifact(variant)
    twin = keras.models.load_model(session.context.artifact("keras").path, compile=False)
    representative = representative_batch(session.context) if mode == "int8" else None
    direct = tmp_path / "direct.tflite"
    direct.write_bytes(convert_keras_model(twin, mode, representative))
    outputs = []
    for path in (artifact.path, direct):
        with make_runner(variant, dataclasses.replace(artifact, path=path), 1) as runner:
            outputs.append(runner.run(session.batch[:4], session.taps))
    for tap in session.taps:
        np.testing.assert_array_equal(outputs[0][tap.name], outputs[1][tap.name], tap.name)


def test_representative_data_is_the_calibration_images_in_nhwc(
    session_for: Callable[[str], Session],
):
    context = session_for("mobilenet_v2").context
    images = representative_batch(context)
    assert images.shape == (32, 224, 224, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images, context.calibration_batch().transpose(0, 2, 3, 1))
    noise = representative_batch(context, "noise")
    assert noise.shape == images.shape and not np.allclose(noise, images)
    with pytest.raises(ParityError, match="unknown TFLite calibration 'random'"):
        representative_batch(context, "random")
    with pytest.raises(ParityError, match="unknown TFLite mode 'int4'"):
        convert_keras_model(None, "int4")
