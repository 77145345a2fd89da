"""Model cards and the tap map (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from parity.errors import ModelCardError
from parity.taps import expand_braces, select_taps
from parity.zoo import get_card, list_models


def test_bundled_cards():
    assert set(list_models()) >= {"mobilenet_v2", "resnet18", "resnet50"}
    assert "resnet50" not in list_models(include_heavy=False)
    card = get_card("mobilenet_v2")
    names = [t.name for t in card.taps]
    assert names[0] == "stem" and names[-2:] == ["pooled", "logits"]
    assert names[1:18] == [f"features.{i}" for i in range(1, 18)]
    pooled = card.taps[-2]
    assert (pooled.module, pooled.point) == ("classifier", "input")
    assert card.preprocess.input_hw == (224, 224)


def test_resnet_taps_cover_every_block():
    assert len(get_card("resnet18").taps) == 2 + 8 + 1
    assert len(get_card("resnet50").taps) == 2 + 16 + 1


def test_brace_expansion():
    assert expand_braces("layer{1..2}.{0..1}") == ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    assert expand_braces("fc") == ["fc"]


def test_select_taps_keeps_forward_order_and_rejects_unknown():
    taps = get_card("resnet18").taps
    assert [t.name for t in select_taps(taps, ["logits", "stem"])] == ["stem", "logits"]
    with pytest.raises(ModelCardError, match="unknown taps"):
        select_taps(taps, ["layer9.0"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('builder = "x:y"\n[taps]\nstem = "a"\n', "missing required key 'taps.logits'"),
        ('[taps]\nlogits = "fc"\n', "missing required key 'builder'"),
        ('builder = "x:y"\n[taps]\nlogits = "fc"\nextra = "a"\n', "unknown key 'extra' in [taps]"),
        ('builder = "x:y"\n[preprocess]\npreset = "weird"\n[taps]\nlogits = "fc"\n', "preset"),
        (
            'builder = "x:y"\n[preprocess]\nresize_filter = "cubic"\n[taps]\nlogits = "fc"\n',
            "cubic",
        ),
        ("= broken", "not valid TOML"),
    ],
)
def test_bad_cards_name_the_file(tmp_path: Path, text: str, message: str):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ModelCardError, match="mine.toml") as error:
        get_card(str(path))
    assert message in str(error.value)


def test_unknown_model_lists_the_known():
    with pytest.raises(ModelCardError, match="available: .*mobilenet_v2"):
        get_card("alexnet")
