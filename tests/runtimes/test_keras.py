"""mobilenet_v2 and resnet18 as Keras twins (the ``keras`` variant), per tap, real runtimes.

Real torch reference, real Keras twins built from the torch weights, all fixture images.
The fault tests prove the gate localises porting bugs at the card-tap level: a twin with
Keras's BatchNorm epsilon (1e-3) or Keras 'same' padding on stride-2 convs must fail, and
the first divergent tap must be the block holding the first faulty layer; the same fault
put on one layer deep inside the network must be caught at that layer's block.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parity.backends.keras.runner import KerasRunner
from parity.compare import VariantVerdict, compare_taps
from parity.errors import ArtifactError, RuntimeFailure, TapError
from parity.harness import Session
from parity.taps import Tap
from parity.variants import VARIANTS

pytestmark = [pytest.mark.torch, pytest.mark.keras]

#: resnet18's twin through the gate under ``-m heavy``: the resnet family is checked by
#: default module by module against torch, faults included (tests/export/test_keras_twins.py).
HEAVY = pytest.mark.heavy
RESNET18 = pytest.param("resnet18", marks=HEAVY)
MODELS = ["mobilenet_v2", RESNET18]


@pytest.fixture(scope="module")
def default_runs(module_runs: Callable[..., None]) -> None:
    """mobilenet_v2's Keras run, its outputs released at the module's end."""
    module_runs("mobilenet_v2", "keras")


@pytest.mark.parametrize("model", [*MODELS, pytest.param("resnet50", marks=pytest.mark.heavy)])
def test_every_tap_within_budget(fp32_parity, default_runs: None, model: str):
    fp32_parity(model, "keras")


# -- fault injection ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def twins(session_for: Callable[[str], Session]) -> Callable[..., Any]:
    """Keras twins of a model's torch weights, built once per (model, fault options)."""
    from parity.export.keras import build_keras_twin

    cache: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}

    def get(model: str, **options: Any) -> Any:
        key = (model, tuple(sorted(options.items())))
        if key not in cache:
            session = session_for(model)
            cache[key] = build_keras_twin(
                session.card.keras_twin,
                session.model().state_dict_numpy(),
                session.card.preprocess.input_hw,
                **options,
            )
        return cache[key]

    return get


def with_layer_changed(model: Any, layer_name: str, **config: Any) -> Any:
    """A copy of functional ``model`` with one layer's config changed, same weights.

    Every layer is rebuilt from its config (``layer_name``'s with ``config`` applied) and
    wired anew, so a changed padding reshapes the graph as it would in a real port; then
    every layer gets the original's weights back.
    """
    import keras

    unknown = set(config) - set(model.get_layer(layer_name).get_config())
    assert not unknown, f"{layer_name} has no config keys {unknown}"

    def clone(layer: Any) -> Any:
        changes = config if layer.name == layer_name else {}
        return layer.__class__.from_config({**layer.get_config(), **changes})

    changed = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        changed.get_layer(layer.name).set_weights(layer.get_weights())
    return changed


def judge_twin(session: Session, twin: Any, model: Any | None = None) -> VariantVerdict:
    """Run ``model`` (default: the twin's) with the twin's tap map; judge every tap.

    The map comes from :func:`tap_layers`, the one the ``keras`` artifact records; a
    changed copy of the twin keeps every layer name, so the twin's map applies to it.
    """
    from parity.export.keras.artifact import tap_layers

    layers = tap_layers(twin, session.taps)
    with KerasRunner("keras_fault", model or twin.model, tap_layers=layers) as runner:
        obtained = runner.run(session.batch, session.taps)
    return compare_taps(
        session.card.name, "keras", session.taps, session.reference, obtained, session.policy
    )


def assert_first_divergent(verdict: VariantVerdict, tap: str) -> None:
    assert not verdict.passed
    assert verdict.first_failure is not None
    assert verdict.first_failure.tap.name == tap, verdict.explain()
    index = [t.tap.name for t in verdict.taps].index(tap)
    assert all(t.passed for t in verdict.taps[:index]), verdict.explain()
    assert f"tap '{tap}'" in verdict.explain()
    # Far outside the budget, not a marginal call, and it reaches the logits.
    first = verdict.first_failure
    assert first.metrics.max_abs_norm > 10 * first.budget.limits["max_abs_norm"]
    assert not verdict.taps[-1].passed


@pytest.mark.parametrize("model", MODELS)
def test_exact_twin_passes(session_for: Callable[[str], Session], twins: Any, model: str):
    """The fault tests' baseline: the twin built here passes like the artifact does."""
    verdict = judge_twin(session_for(model), twins(model))
    assert verdict.passed, verdict.explain()


@pytest.mark.parametrize(
    ("model", "fault"),
    [
        # mobilenet_v2: features.0 = Conv (3x3, stride 2) + the first BatchNorm + ReLU6.
        ("mobilenet_v2", {"bn_epsilon": 1e-3}),
        ("mobilenet_v2", {"stride2_padding": "same"}),
        # resnet18: the stem tap (maxpool) follows conv1 (7x7, stride 2) and bn1.
        pytest.param("resnet18", {"bn_epsilon": 1e-3}, marks=pytest.mark.heavy),
        pytest.param("resnet18", {"stride2_padding": "same"}, marks=pytest.mark.heavy),
    ],
    ids=["mobilenet_v2-bn_eps", "mobilenet_v2-same_pad", "resnet18-bn_eps", "resnet18-same_pad"],
)
def test_twin_wide_fault_fails_at_the_stem(
    session_for: Callable[[str], Session], twins: Any, model: str, fault: dict[str, Any]
):
    verdict = judge_twin(session_for(model), twins(model, **fault))
    assert_first_divergent(verdict, "stem")


@pytest.mark.parametrize(
    ("model", "layer", "config", "tap"),
    [
        # One depthwise BatchNorm in the middle of the network with Keras's epsilon.
        ("mobilenet_v2", "features.10.conv.1.1", {"epsilon": 1e-3}, "features.10"),
        pytest.param("resnet18", "layer3.0.bn1", {"epsilon": 1e-3}, "layer3.0", marks=HEAVY),
        # One stride-2 conv padded like Keras 'same' (bottom/right only) instead of torch's
        # symmetric 1: features.7's 3x3 stride-2 depthwise conv, layer3.0's 3x3 stride-2
        # conv1. ((0, 1), (0, 1)) + 'valid' is exactly 'same' here (28x28 input, k=3, s=2).
        ("mobilenet_v2", "features.7.conv.1.0-pad", {"padding": ((0, 1), (0, 1))}, "features.7"),
        pytest.param(
            "resnet18", "layer3.0.conv1-pad", {"padding": ((0, 1), (0, 1))}, "layer3.0", marks=HEAVY
        ),
    ],
    ids=["mobilenet_v2-bn_eps", "resnet18-bn_eps", "mobilenet_v2-same_pad", "resnet18-same_pad"],
)
def test_one_faulty_layer_fails_at_its_block(
    session_for: Callable[[str], Session],
    twins: Any,
    model: str,
    layer: str,
    config: dict[str, Any],
    tap: str,
):
    session = session_for(model)
    twin = twins(model)
    faulty = with_layer_changed(twin.model, layer, **config)
    for key, value in config.items():  # the fault is really in the copy
        got = faulty.get_layer(layer).get_config()[key]
        assert np.array_equal(np.asarray(got), np.asarray(value)), (key, got)
    assert_first_divergent(judge_twin(session, twin, faulty), tap)


def test_run_dropping_intermediates_equals_the_keras_call(session_for: Callable[[str], Session]):
    """The runner frees each intermediate after its last use; the taps are Keras's, bitwise."""
    session = session_for("mobilenet_v2")
    artifact = session.artifact(VARIANTS["keras"])
    tap_layers = artifact.metadata["runner_options"]["tap_layers"]
    batch = session.batch[:4]  # every intermediate of the Keras call is held: keep it small
    with KerasRunner("keras", artifact.path, tap_layers=tap_layers) as runner:
        obtained = runner.run(batch, session.taps)
        tapped = runner._tapped_model(session.taps)
        feed = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        values = [np.asarray(v) for v in tapped([feed], training=False)]
    names = ["output", *(t.name for t in session.taps)]
    assert set(obtained) == set(names)
    for name, value in zip(names, values, strict=True):
        expected = value.transpose(0, 3, 1, 2) if value.ndim == 4 else value
        np.testing.assert_array_equal(obtained[name], expected, err_msg=name)


# -- broken artifacts and tap maps ----------------------------------------------------------


def test_missing_keras_file_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "missing.keras"
    with pytest.raises(ArtifactError, match=r"missing\.keras: Keras file not found"):
        KerasRunner("keras", path).activate()


def test_truncated_keras_file_is_a_clear_error(
    session_for: Callable[[str], Session], tmp_path: Path
):
    source = session_for("mobilenet_v2").artifact(VARIANTS["keras"]).path
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with pytest.raises(RuntimeFailure, match=r"truncated\.keras: Keras cannot load it"):
        KerasRunner("keras", truncated).activate()


def test_tap_mapped_to_a_missing_layer_is_an_error_naming_the_tap(
    session_for: Callable[[str], Session],
):
    session = session_for("mobilenet_v2")
    artifact = session.artifact(VARIANTS["keras"])
    layers = dict(artifact.metadata["runner_options"]["tap_layers"])
    layers["features.5"] = "features.5.conv.9"  # no such layer
    with (
        KerasRunner("keras", artifact.path, tap_layers=layers) as runner,
        pytest.raises(TapError, match=r"tap 'features\.5'.*'features\.5\.conv\.9'"),
    ):
        runner.run(session.batch[:1], session.taps)


def test_unmapped_tap_is_an_error_naming_it(session_for: Callable[[str], Session]):
    session = session_for("mobilenet_v2")
    artifact = session.artifact(VARIANTS["keras"])
    with (
        KerasRunner("keras", artifact.path, tap_layers={}) as runner,
        pytest.raises(TapError, match="tap 'nowhere'"),
    ):
        runner.run(session.batch[:1], [Tap("nowhere", "features.99")])
