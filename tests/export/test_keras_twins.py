"""Keras twins of torchvision models against real torch, tap by tap (no mocks).

Every module of the torch model with an output in the forward pass is hooked and compared
with the Keras layer ``module_to_layer`` names, relative to the tap's own scale:
``max|keras - torch| / max|torch|``. The torch models get realistic statistics first
(BatchNorm gamma/beta spread, running stats re-estimated on image-like inputs): at plain
init activations collapse and BatchNorm/transfer bugs hide below any tolerance.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from deferred import deferred

from parity.errors import WeightTransferError
from parity.export.keras import KerasTwin, build_keras_twin
from parity.export.keras.transfer import keras_layer_name, split_layer_name

# Imported at first use (keras after torch and torchvision: the conftest's import-order
# trap). The [dev] extra installs all three: a missing one is an error, not a skip.
torch = deferred("torch")
torchvision = deferred("torchvision")
keras = deferred("keras")

pytestmark = [pytest.mark.torch, pytest.mark.keras]

TOL = 1e-4  # twin vs torch, per tap, relative to the tap's max |torch|
DIVERGED = 1e-3  # a fault-injected tap counts as divergent above this
HW = (224, 224)

MODELS: dict[str, tuple[str, Callable[[], Any]]] = {
    "mobilenet_v2": ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None)),
    "mobilenet_v2_w050": (
        "mobilenet_v2",
        lambda: torchvision.models.mobilenet_v2(weights=None, width_mult=0.5),
    ),
    "resnet18": ("resnet", lambda: torchvision.models.resnet18(weights=None)),
    "resnet50": ("resnet", lambda: torchvision.models.resnet50(weights=None)),
}
#: mobilenet_v2 at width 0.5 and resnet50 are built and compared under ``-m heavy``: the
#: same builders as mobilenet_v2's and resnet18's, with other channel counts and depths.
CASES = [
    "mobilenet_v2",
    pytest.param("mobilenet_v2_w050", marks=pytest.mark.heavy),
    "resnet18",
    pytest.param("resnet50", marks=pytest.mark.heavy),
]


def image_like(n: int, gen: Any) -> Any:
    """Smooth multi-scale noise in [0, 1], ImageNet-normalised: (n, 3, H, W)."""
    x = torch.zeros(n, 3, *HW)
    for size, weight in ((4, 1.0), (16, 0.5), (56, 0.25), (224, 0.1)):
        noise = torch.randn(n, 3, size, size, generator=gen)
        x += weight * torch.nn.functional.interpolate(
            noise, size=HW, mode="bilinear", align_corners=False
        )
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    x = (x - lo) / (hi - lo)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def calibrated(factory: Callable[[], Any], seed: int = 0) -> Any:
    """The model with BN gamma~U(0.5,1.5), beta~N(0,0.2), running stats from 8 images."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = factory()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
        model.train()
        model(image_like(8, gen))
    return model.eval()


@dataclass
class Reference:
    """A calibrated torch model, its numpy state_dict, a 2-image batch and its taps."""

    arch: str
    model: Any
    state_dict: dict[str, np.ndarray]
    x: np.ndarray  # NCHW
    order: list[tuple[str, int]]  # (module path, call index) in hook firing order
    taps: dict[str, list[np.ndarray]]


def torch_taps(model: Any, x: np.ndarray) -> tuple[list[tuple[str, int]], dict[str, list]]:
    """Forward-hook outputs of every module (cloned: ResNet's ReLUs are in-place)."""
    taps: dict[str, list[np.ndarray]] = {}
    order: list[tuple[str, int]] = []

    def hook(name: str) -> Callable[..., None]:
        def record(_m: Any, _i: Any, out: Any) -> None:
            taps.setdefault(name, []).append(out.detach().clone().numpy())
            order.append((name, len(taps[name]) - 1))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()]
    try:
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        for h in handles:
            h.remove()
    return order, taps


def keras_taps(twin: KerasTwin, x_nchw: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of every Keras layer a torch module maps to, converted to NCHW."""
    names = sorted(
        set(twin.module_to_layer.values()) | {n for v in twin.module_calls.values() for n in v}
    )
    probe = keras.Model(twin.model.input, [twin.model.get_layer(n).output for n in names])
    outs = probe(x_nchw.transpose(0, 2, 3, 1), training=False)
    result = {}
    for name, out in zip(names, outs, strict=True):
        a = np.asarray(out)
        result[name] = a.transpose(0, 3, 1, 2) if a.ndim == 4 else a
    return result


def rel_errors(ref: Reference, twin: KerasTwin) -> list[tuple[str, int, float]]:
    """(module, call, max|a-b|/max|ref|) for every torch tap, in forward order."""
    outs = keras_taps(twin, ref.x)
    rows = []
    for name, call in ref.order:
        layer = (
            twin.module_calls[name][call]
            if name in twin.module_calls
            else twin.module_to_layer[name]
        )
        a, b = ref.taps[name][call], outs[layer]
        assert a.shape == b.shape, (name, layer, a.shape, b.shape)
        scale = float(np.abs(a).max()) or 1.0
        rows.append((name, call, float(np.abs(a - b).max()) / scale))
    return rows


@pytest.fixture(scope="module")
def references() -> Callable[[str], Reference]:
    cache: dict[str, Reference] = {}

    def get(case: str) -> Reference:
        if case not in cache:
            arch, factory = MODELS[case]
            model = calibrated(factory)
            x = image_like(2, torch.Generator().manual_seed(1)).numpy()
            order, taps = torch_taps(model, x)
            sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
            cache[case] = Reference(arch, model, sd, x, order, taps)
        return cache[case]

    return get


@pytest.fixture(scope="module")
def twins(references: Callable[[str], Reference]) -> Callable[..., KerasTwin]:
    cache: dict[tuple[str, str], KerasTwin] = {}
    faults: dict[str, dict[str, Any]] = {
        "exact": {},
        "bn_eps": {"bn_epsilon": 1e-3},
        "same_pad": {"stride2_padding": "same"},
    }

    def get(case: str, fault: str = "exact") -> KerasTwin:
        if (case, fault) not in cache:
            ref = references(case)
            cache[case, fault] = build_keras_twin(ref.arch, ref.state_dict, HW, **faults[fault])
        return cache[case, fault]

    return get


@pytest.mark.parametrize("case", CASES)
def test_every_module_output_is_mapped(case: str, references: Any, twins: Any) -> None:
    ref, twin = references(case), twins(case)
    assert set(twin.module_to_layer) == set(ref.taps)
    assert twin.module_to_layer[""] == ("fc" if ref.arch == "resnet" else "classifier.1")
    multi = {name for name, outs in ref.taps.items() if len(outs) > 1}
    assert set(twin.module_calls) == multi
    for name in multi:
        assert len(twin.module_calls[name]) == len(ref.taps[name])
        assert twin.module_calls[name][-1] == twin.module_to_layer[name]
    layer_names = {layer.name for layer in twin.model.layers}
    assert set(twin.module_to_layer.values()) <= layer_names


@pytest.mark.parametrize("case", CASES)
def test_twin_matches_torch_at_every_tap(case: str, references: Any, twins: Any) -> None:
    rows = rel_errors(references(case), twins(case))
    worst = max(rows, key=lambda r: r[2])
    print(f"{case}: {len(rows)} taps, worst max|a-b|/max|ref| = {worst[2]:.2e} at {worst[:2]}")
    bad = [r for r in rows if not r[2] < TOL]
    assert not bad, f"{len(bad)} taps over {TOL}: {bad[:5]}"
    # Calibration sanity: the logits are not collapsed, so absolute errors mean something.
    assert np.abs(references(case).taps[""][0]).max() > 0.1


@pytest.mark.parametrize(
    ("case", "fault", "first"),
    [
        ("mobilenet_v2", "bn_eps", "features.0.1"),  # first BatchNorm
        ("mobilenet_v2", "same_pad", "features.0.0"),  # first stride-2 conv: 3x3 s2 p1
        ("resnet18", "bn_eps", "bn1"),
        ("resnet18", "same_pad", "conv1"),  # 7x7 s2 p3; 'same' pads (2, 3), torch (3, 3)
    ],
)
def test_fault_first_diverges_at_the_right_module(
    case: str, fault: str, first: str, references: Any, twins: Any
) -> None:
    rows = rel_errors(references(case), twins(case, fault))
    divergent = [r for r in rows if r[2] > DIVERGED]
    assert divergent, f"{fault} twin of {case} matches torch everywhere"
    assert divergent[0][0] == first, divergent[:3]
    assert rows[-1][0] == "" and rows[-1][2] > DIVERGED  # and it reaches the logits


@pytest.fixture(scope="module")
def small_sd(references: Callable[[str], Reference]) -> dict[str, np.ndarray]:
    """mobilenet_v2's state_dict (calibrated for the default cases anyway; width 0.5, a
    smaller twin, would calibrate another torch model first)."""
    return dict(references("mobilenet_v2").state_dict)


def test_missing_tensor_is_named(small_sd: dict[str, np.ndarray]) -> None:
    for key in ("features.3.conv.1.1.running_var", "features.5.conv.0.0.weight"):
        sd = {k: v for k, v in small_sd.items() if k != key}
        with pytest.raises(WeightTransferError, match=rf"'{key}'"):
            build_keras_twin("mobilenet_v2", sd, HW)


def test_extra_tensor_is_named(small_sd: dict[str, np.ndarray]) -> None:
    sd = {**small_sd, "features.3.conv.1.1.scale": np.ones(3, np.float32)}
    with pytest.raises(WeightTransferError, match=r"'features\.3\.conv\.1\.1\.scale'.*left over"):
        build_keras_twin("mobilenet_v2", sd, HW)


def test_misshaped_tensor_names_both_shapes(small_sd: dict[str, np.ndarray]) -> None:
    key = "features.5.conv.1.1.running_var"
    c = small_sd[key].shape[0]
    sd = {**small_sd, key: np.ones(c + 1, np.float32)}
    with pytest.raises(WeightTransferError) as err:
        build_keras_twin("mobilenet_v2", sd, HW)
    msg = str(err.value)
    assert key in msg and f"({c + 1},)" in msg and f"({c},)" in msg
    assert "features.5.conv.1.1/moving_variance" in msg
    # A depthwise kernel of the wrong size: torch layout and Keras layout both shown.
    key = "features.5.conv.1.0.weight"
    sd = {**small_sd, key: np.ones((c, 1, 5, 5), np.float32)}
    with pytest.raises(WeightTransferError) as err:
        build_keras_twin("mobilenet_v2", sd, HW)
    msg = str(err.value)
    assert f"({c}, 1, 5, 5)" in msg and f"(3, 3, {c}, 1)" in msg


def test_num_batches_tracked_is_ignored_and_required_nowhere(
    small_sd: dict[str, np.ndarray],
) -> None:
    assert any(k.endswith("num_batches_tracked") for k in small_sd)
    sd = {k: v for k, v in small_sd.items() if not k.endswith("num_batches_tracked")}
    build_keras_twin("mobilenet_v2", sd, HW)


def test_layer_names_round_trip() -> None:
    assert keras_layer_name("features.3.conv.0.0") == "features.3.conv.0.0"
    assert keras_layer_name("features.0.0", "pad") == "features.0.0-pad"
    assert split_layer_name("layer1.0.relu-call0") == ("layer1.0.relu", "call0")
    assert split_layer_name("layer2.1.bn2") == ("layer2.1.bn2", None)
    assert split_layer_name("flatten") == ("", "flatten")
    for bad in ("", "a..b", "a-b", "a/b", "a:b", "a b"):
        with pytest.raises(WeightTransferError):
            keras_layer_name(bad)


def test_package_imports_without_keras_or_torch() -> None:
    code = (
        "import sys, parity.export.keras; "
        "assert not {'keras', 'tensorflow', 'torch'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_twin_family_is_one_decorated_builder():
    """A Keras twin family registers itself by name (no closed dict to edit); a second
    builder under a taken name is refused."""
    from parity.errors import WeightTransferError
    from parity.export.keras import ARCHITECTURES, build_keras_twin, register_twin

    @register_twin("tiny_test")
    def build(graph: Any, input_hw: tuple[int, int]) -> Any:
        return ("built", input_hw)

    try:
        assert build_keras_twin("tiny_test", {}, (8, 8)).model == ("built", (8, 8))
        with pytest.raises(WeightTransferError, match="registered twice"):
            register_twin("tiny_test")(lambda graph, input_hw: None)
    finally:
        ARCHITECTURES.pop("tiny_test")
