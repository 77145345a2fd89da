"""The preprocessing spec on the real fixture images (no mocks).

Numbers quoted in comments were measured with torch 2.14.1 / torchvision 0.29.1 /
Pillow 13 on the committed fixtures. One 8-bit level after ImageNet normalisation is
1 / 255 / std ~= 0.0174 in tensor units.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parity.errors import FixtureError
from parity.fixtures import load_fixtures
from parity.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PreprocessSpec,
    load_image,
    preprocess,
    preprocess_batch,
    resized_size,
    tensor_sha256,
    to_layout,
    to_tensor,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
IMAGES = FIXTURES / "images"
ENTRIES = json.loads((FIXTURES / "manifest.json").read_text())["images"]
GOLDEN = [e["name"] for e in ENTRIES if e["role"] == "golden"]
PATHS = {e["name"]: FIXTURES / e["file"] for e in ENTRIES}

DEFAULT = PreprocessSpec()
# The same geometry, but no scaling/normalisation: the tensor holds the 8-bit values.
RAW = PreprocessSpec(scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
STD = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]


def rgb(name: str, spec: PreprocessSpec = DEFAULT) -> np.ndarray:
    """The decoded 8-bit RGB image as a (h, w, 3) int array."""
    return np.asarray(load_image(PATHS[name], spec), dtype=np.int32)


# --------------------------------------------------------------------------------------
# 1. The default spec is torchvision's weights.transforms()
# --------------------------------------------------------------------------------------

WEIGHTS = ("MobileNet_V2_Weights", "ResNet18_Weights")


def _transforms(weights_class: str):
    from torchvision import models

    # Building the transforms object needs no weights download.
    return getattr(models, weights_class).IMAGENET1K_V1.transforms()


@pytest.mark.torch
@pytest.mark.parametrize("weights_class", WEIGHTS)
@pytest.mark.parametrize("name", GOLDEN)
def test_default_spec_matches_torchvision_transforms(weights_class: str, name: str) -> None:
    """Measured max |ours - torchvision| over the 8 goldens: 7.15e-7 (both weights).

    That is float32 rounding only (~3 ulp at |x| ~ 2.6: we compute x * (1/255) in one
    step, torchvision x / 255 then (x - mean) / std); the 8-bit resized/cropped pixels
    are bit-identical, see the next test.
    """
    transforms = _transforms(weights_class)
    with Image.open(PATHS[name]) as image:
        expected = transforms(image.convert("RGB")).numpy()
    ours = preprocess(PATHS[name], DEFAULT)
    assert ours.shape == expected.shape == (3, 224, 224)
    assert ours.dtype == np.float32
    assert float(np.abs(ours - expected).max()) <= 1e-6


@pytest.mark.torch
@pytest.mark.parametrize("weights_class", WEIGHTS)
def test_default_geometry_is_bit_identical_to_torchvision(weights_class: str) -> None:
    """Resize + centre crop (PIL path) give exactly torchvision's 8-bit pixels."""
    from torchvision.transforms import functional

    transforms = _transforms(weights_class)
    assert tuple(transforms.resize_size) == DEFAULT.resize
    assert tuple(transforms.crop_size) * 2 == DEFAULT.crop
    assert tuple(transforms.mean) == DEFAULT.mean
    assert tuple(transforms.std) == DEFAULT.std
    for name in GOLDEN:
        with Image.open(PATHS[name]) as image:
            resized = functional.resize(
                image.convert("RGB"),
                transforms.resize_size,
                interpolation=transforms.interpolation,
                antialias=transforms.antialias,
            )
            expected = functional.pil_to_tensor(
                functional.center_crop(resized, transforms.crop_size)
            )
        assert np.array_equal(preprocess(PATHS[name], RAW), expected.numpy()), name


# --------------------------------------------------------------------------------------
# 2. Awkward inputs
# --------------------------------------------------------------------------------------


def test_exif_rotated_jpeg_is_upright() -> None:
    with Image.open(PATHS["exif_rotated"]) as raw:
        assert raw.size == (300, 451)  # stored rotated
        assert raw.getexif().get(0x0112) == 6
    assert load_image(PATHS["exif_rotated"]).size == (451, 300)
    # Pixels: JPEG q90 loss only (measured mean 1.99 levels).
    assert np.abs(rgb("exif_rotated") - rgb("chelsea")).mean() < 3.0
    upright = preprocess(PATHS["chelsea"])
    # Tensors: measured mean 0.029 (~1.7 levels), max 0.49.
    diff = np.abs(preprocess(PATHS["exif_rotated"]) - upright)
    assert diff.mean() < 0.05
    assert diff.max() < 1.0
    # Without the transpose it is a different (sideways) picture: measured mean 0.615.
    sideways = PreprocessSpec(exif_transpose=False)
    assert load_image(PATHS["exif_rotated"], sideways).size == (300, 451)
    assert np.abs(preprocess(PATHS["exif_rotated"], sideways) - upright).mean() > 0.3


def test_grayscale_gives_three_equal_channels() -> None:
    with Image.open(PATHS["grayscale"]) as raw:
        assert raw.mode == "L"
        luma = np.asarray(raw, dtype=np.int32)
    image = load_image(PATHS["grayscale"])
    assert image.mode == "RGB"
    pixels = np.asarray(image, dtype=np.int32)
    for channel in range(3):
        assert np.array_equal(pixels[..., channel], luma)
    tensor = preprocess(PATHS["grayscale"], RAW)
    assert tensor.shape == (3, 224, 224)
    assert np.array_equal(tensor[0], tensor[1])
    assert np.array_equal(tensor[1], tensor[2])


def test_rgba_alpha_drop_equals_convert_rgb() -> None:
    with Image.open(PATHS["rgba_transparent"]) as raw:
        assert raw.mode == "RGBA"
        expected = np.asarray(raw.convert("RGB"), dtype=np.int32)
    assert np.array_equal(rgb("rgba_transparent", PreprocessSpec(alpha="drop")), expected)


@pytest.mark.parametrize(("alpha", "background"), [("white", 255), ("black", 0)])
def test_rgba_alpha_composites_onto_background(alpha: str, background: int) -> None:
    with Image.open(PATHS["rgba_transparent"]) as raw:
        rgba = np.asarray(raw, dtype=np.int32)
    colour, opacity = rgba[..., :3], rgba[..., 3]
    transparent, opaque = opacity == 0, opacity == 255
    assert transparent.sum() > 1000 and opaque.sum() > 1000  # the fixture has both
    composited = rgb("rgba_transparent", PreprocessSpec(alpha=alpha))
    assert (composited[transparent] == background).all()
    assert np.array_equal(composited[opaque], colour[opaque])
    # Partly transparent pixels move towards the background (never away, +-1 rounding).
    towards = (background - colour) * np.sign(background - 127.5)
    moved = (composited - colour) * np.sign(background - 127.5)
    assert (moved >= -1).all() and (moved <= towards + 1).all()
    # And the photo under alpha == 0 is not what the model sees.
    assert not np.array_equal(composited, rgb("rgba_transparent", PreprocessSpec(alpha="drop")))


def test_cmyk_jpeg_decodes_close_to_its_source() -> None:
    """Tolerance: mean |diff| < 4 levels (measured 2.78), tensor mean < 0.03 (0.017).

    The fixture is PIL's naive RGB->CMYK of ``rocket`` saved as JPEG q90 with 4:2:0
    subsampling, which libjpeg applies to the M/Y/K planes (CMYK gets no YCbCr
    transform): saturated colour edges lose up to 128 levels on a few hundred pixels
    (715 of 273k pixels differ by > 64), so only the mean is a meaningful bound.
    """
    with Image.open(PATHS["cmyk"]) as raw:
        assert raw.mode == "CMYK"
        inks = np.asarray(raw, dtype=np.int32)
    decoded = load_image(PATHS["cmyk"])
    assert decoded.mode == "RGB"
    source = rgb("rocket")
    assert np.abs(np.asarray(decoded, dtype=np.int32) - source).mean() < 4.0
    assert np.abs(preprocess(PATHS["cmyk"]) - preprocess(PATHS["rocket"])).mean() < 0.03
    # Reading the inks as if they were RGB would be a photographic negative.
    assert np.abs(inks[..., :3] - source).mean() > 50


def test_16bit_png_is_scaled_not_clipped() -> None:
    with Image.open(PATHS["gray16"]) as raw:
        assert raw.mode.startswith("I")
        assert np.asarray(raw).max() > 255
        # The classic bug: convert("RGB") clips everything above 255 (measured 99.998 %).
        assert (np.asarray(raw.convert("RGB")) == 255).mean() > 0.9
    pixels = rgb("gray16")
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 1], pixels[..., 2])
    assert (pixels == 255).mean() < 0.01  # measured 7e-6
    assert pixels.min() <= 5 and pixels.max() >= 250  # the full range survives
    with Image.open(PATHS["chelsea"]) as source:
        luma = np.asarray(source.convert("L"), dtype=np.float64)
    correlation = np.corrcoef(luma.ravel(), pixels[..., 0].astype(np.float64).ravel())[0, 1]
    assert correlation > 0.99  # measured 0.99972
    assert preprocess(PATHS["gray16"]).shape == (3, 224, 224)


def test_small_image_is_upscaled_to_the_crop() -> None:
    with Image.open(PATHS["small"]) as raw:
        assert raw.size == (120, 90)
    assert preprocess(PATHS["small"], DEFAULT.replace(crop=None)).shape == (3, 256, 341)
    tensor = preprocess(PATHS["small"])
    assert tensor.shape == (3, 224, 224)
    # Upscaled, not zero-padded: no border row/column is black.
    pixels = tensor * STD + MEAN
    for border in (pixels[:, 0], pixels[:, -1], pixels[:, :, 0], pixels[:, :, -1]):
        assert border.max() > 0.1
    # Without the resize, CenterCrop semantics zero-pad it (torchvision does the same).
    padded = preprocess(PATHS["small"], RAW.replace(resize=None))
    assert padded.shape == (3, 224, 224)
    assert (padded[:, :, :52] == 0).all() and (padded[:, :67] == 0).all()


def test_panorama_gives_the_centre_crop() -> None:
    with Image.open(PATHS["panorama"]) as raw:
        assert raw.size == (1280, 240)
    assert resized_size(1280, 240, (256,)) == (1365, 256)
    full = preprocess(PATHS["panorama"], DEFAULT.replace(crop=None))
    assert full.shape == (3, 256, 1365)
    tensor = preprocess(PATHS["panorama"])
    assert tensor.shape == (3, 224, 224)
    assert np.array_equal(tensor, full[:, 16:240, 570:794])  # round((1365 - 224) / 2) = 570
    # The fixture is a photo beside its mirror image, so its centre is mirror-symmetric
    # (measured mean 0.013, vs 0.56 for the left edge).
    assert np.abs(tensor - tensor[..., ::-1]).mean() < 0.05
    assert np.abs(full[:, 16:240, :224] - full[:, 16:240, 223::-1]).mean() > 0.2


def test_palette_png_decodes_to_rgb() -> None:
    with Image.open(PATHS["palette"]) as raw:
        assert raw.mode == "P"
        expected = np.asarray(raw.convert("RGB"), dtype=np.int32)
    assert np.array_equal(rgb("palette"), expected)
    tensor = preprocess(PATHS["palette"])
    assert tensor.shape == (3, 224, 224)
    # 64 dithered colours of coffee: close on average (measured 0.045).
    assert np.abs(tensor - preprocess(PATHS["coffee"])).mean() < 0.1


# --------------------------------------------------------------------------------------
# 3. Spec semantics
# --------------------------------------------------------------------------------------

# One non-default value per field.
CHANGED = {
    "exif_transpose": False,
    "alpha": "white",
    "resize": (224, 224),
    "resize_filter": "nearest",
    "antialias": False,
    "crop": (200, 200),
    "crop_first": True,
    "scale": 1.0,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "channel_order": "BGR",
    "layout": "NHWC",
    "dtype": "float16",
}


def test_changed_covers_every_field() -> None:
    assert set(CHANGED) == {f.name for f in dataclasses.fields(PreprocessSpec)}


@pytest.mark.parametrize("spec", [DEFAULT, PreprocessSpec(**CHANGED)], ids=["default", "all"])
def test_spec_json_round_trip(spec: PreprocessSpec) -> None:
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    text = spec.to_json()
    assert PreprocessSpec.from_dict(json.loads(text)) == spec
    assert PreprocessSpec.from_dict(json.loads(text)).to_json() == text
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    assert spec.sha256 == hashlib.sha256(text.encode()).hexdigest()


def test_default_spec_json_is_pinned() -> None:
    """Changing the default spec invalidates every golden: it must be deliberate."""
    assert DEFAULT.to_json() == (
        '{"alpha":"drop","antialias":true,"channel_order":"RGB","crop":[224,224],'
        '"crop_first":false,"dtype":"float32","exif_transpose":true,"layout":"NCHW",'
        '"mean":[0.485,0.456,0.406],"resize":[256],"resize_filter":"bilinear",'
        '"scale":0.00392156862745098,"std":[0.229,0.224,0.225]}'
    )
    assert DEFAULT.sha256 == "9cf6d335fcf043ea955a58d9bab9073de21ac05744fc40743ea5a83041a41d4a"


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_sha256_changes_with_each_field(field: str) -> None:
    changed = DEFAULT.replace(**{field: CHANGED[field]})
    assert changed != DEFAULT
    assert changed.sha256 != DEFAULT.sha256


def test_from_dict_shorthands_and_unknown_keys() -> None:
    spec = PreprocessSpec.from_dict({"resize": 256, "crop": 224})
    assert spec.resize == (256,) and spec.crop == (224, 224)
    assert spec == DEFAULT
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        PreprocessSpec.from_dict({"resize_mode": "bilinear"})
    with pytest.raises(ValueError, match="antialias=False"):
        PreprocessSpec(resize_filter="bicubic", antialias=False)


def test_nhwc_is_exactly_a_transpose() -> None:
    paths = [PATHS[n] for n in ("chelsea", "coffee", "small")]
    nchw = preprocess_batch(paths, DEFAULT)
    assert nchw.shape == (3, 3, 224, 224)
    nhwc = to_layout(nchw, "NCHW", "NHWC")
    assert nhwc.shape == (3, 224, 224, 3)
    assert nhwc.flags.c_contiguous
    assert np.array_equal(nhwc, nchw.transpose(0, 2, 3, 1))
    assert np.array_equal(to_layout(nhwc, "NHWC", "NCHW"), nchw)
    assert np.array_equal(preprocess_batch(paths, DEFAULT.replace(layout="NHWC")), nhwc)
    assert to_layout(nchw, "NCHW", "NCHW") is nchw


def test_tensor_sha256_covers_dtype_shape_and_bytes() -> None:
    tensor = preprocess(PATHS["chelsea"])
    digest = tensor_sha256(tensor)
    assert tensor_sha256(tensor.copy()) == digest
    assert tensor_sha256(tensor.astype(np.float64)) != digest
    assert tensor_sha256(tensor.reshape(3, 112, 448)) != digest  # same bytes, other shape
    assert tensor_sha256(tensor.view(np.int32)) != digest  # same bytes, other dtype
    flipped = tensor.copy()
    flipped.flat[12345] = np.nextafter(flipped.flat[12345], np.float32(10))
    assert tensor_sha256(flipped) != digest
    # Hashes the logical (C-order) content, not the memory layout.
    transposed = tensor.transpose(1, 2, 0)
    assert tensor_sha256(transposed) == tensor_sha256(np.ascontiguousarray(transposed))


FIXTURE_SIZES = sorted({(e["width"], e["height"]) for e in ENTRIES})


@pytest.mark.torch
def test_resized_size_matches_torchvision_resize() -> None:
    from torchvision import transforms

    sizes = FIXTURE_SIZES + [(h, w) for w, h in FIXTURE_SIZES]  # landscape and portrait
    assert (1280, 240) in sizes and (240, 1280) in sizes and (300, 451) in sizes
    for resize in ((256,), (224, 300)):
        reference = transforms.Resize(list(resize))
        for width, height in sizes:
            out = reference(Image.new("RGB", (width, height))).size
            assert resized_size(width, height, resize) == out, (width, height, resize)


def test_bgr_is_exactly_the_reversed_channels() -> None:
    rgb_tensor = preprocess(PATHS["astronaut"])
    bgr_tensor = preprocess(PATHS["astronaut"], DEFAULT.replace(channel_order="BGR"))
    assert np.array_equal(bgr_tensor, rgb_tensor[::-1])
    assert not np.array_equal(bgr_tensor, rgb_tensor)


@pytest.mark.torch
@pytest.mark.parametrize(
    ("name", "size"),
    [("hubble_deep_field", (87, 100)), ("retina", (224, 224)), ("small", (200, 267))],
    ids=["downscale-10x", "downscale-4.5x", "upscale"],
)
def test_no_antialias_bilinear_matches_torch_interpolate(name: str, size: tuple[int, int]) -> None:
    """``antialias=False`` is torch/TF half-pixel bilinear: within 1 level (rounding)."""
    import torch

    spec = RAW.replace(resize=size, crop=None, antialias=False)
    ours = preprocess(PATHS[name], spec)
    image = torch.from_numpy(rgb(name).astype(np.uint8)).permute(2, 0, 1)[None]
    expected = torch.nn.functional.interpolate(
        image, size=size, mode="bilinear", align_corners=False, antialias=False
    )[0].numpy()
    assert ours.shape == expected.shape == (3, *size)
    assert np.abs(ours - expected).max() <= 1.0


def test_no_antialias_differs_from_pil_on_a_large_downscale() -> None:
    """The tf.image.resize vs PIL pitfall: measured mean 6.9 levels (max 207) at 10x."""
    spec = RAW.replace(resize=(87, 100), crop=None)
    sampled = preprocess(PATHS["hubble_deep_field"], spec.replace(antialias=False))
    filtered = preprocess(PATHS["hubble_deep_field"], spec)
    assert np.abs(sampled - filtered).mean() > 3.0


def test_crop_first_gives_a_different_tensor() -> None:
    default = preprocess(PATHS["chelsea"])
    same_size = DEFAULT.replace(crop_first=True, resize=(224, 224))
    cropped_first = preprocess(PATHS["chelsea"], same_size)
    assert cropped_first.shape == default.shape
    assert np.abs(cropped_first - default).mean() > 0.1
    # With the default shorter-side resize the crop is resized to 256x256.
    spec = DEFAULT.replace(crop_first=True)
    assert preprocess(PATHS["chelsea"], spec).shape == (3, *spec.input_hw) == (3, 256, 256)


def test_to_tensor_dtype() -> None:
    image = load_image(PATHS["chelsea"])
    half = to_tensor(image, DEFAULT.replace(dtype="float16"))
    assert half.dtype == np.float16
    assert np.abs(half.astype(np.float32) - to_tensor(image, DEFAULT)).max() < 0.01


# --------------------------------------------------------------------------------------
# 4. Bad input: a FixtureError naming the file
# --------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.png"
    with pytest.raises(FixtureError, match="nowhere.png.*no such image"):
        preprocess(path)


def test_text_file_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not pixels\n")
    with pytest.raises(FixtureError, match="notes.png.*not an image"):
        preprocess(path)


@pytest.mark.parametrize("name", ["chelsea", "exif_rotated"], ids=["png", "jpeg"])
def test_truncated_image(tmp_path: Path, name: str) -> None:
    data = PATHS[name].read_bytes()
    path = tmp_path / f"half_{PATHS[name].name}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FixtureError, match=f"half_{PATHS[name].name}.*truncated"):
        preprocess(path)


def test_empty_batch() -> None:
    with pytest.raises(FixtureError, match="no images"):
        preprocess_batch([])


def test_load_fixtures_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="no image files") as info:
        load_fixtures(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_fixtures_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FixtureError, match="nope.*no such fixtures directory"):
        load_fixtures(tmp_path / "nope")


@pytest.fixture
def fixture_copy(tmp_path: Path) -> Path:
    """fixtures/images and the manifest copied to tmp_path (goldens + awkward only)."""
    root = tmp_path / "fixtures"
    shutil.copytree(IMAGES, root / "images")
    shutil.copy(FIXTURES / "manifest.json", root / "manifest.json")
    return root


def test_copied_fixtures_load(fixture_copy: Path) -> None:
    names = [f.name for f in load_fixtures(fixture_copy)]
    assert names == [e["name"] for e in ENTRIES if e["role"] in ("golden", "awkward")]


def test_changed_fixture_byte_is_detected(fixture_copy: Path) -> None:
    path = fixture_copy / "images" / "coffee.png"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(FixtureError, match=r"coffee\.png.*fixture changed"):
        load_fixtures(fixture_copy)


def test_changed_manifest_hash_is_detected(fixture_copy: Path) -> None:
    manifest = fixture_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    entry = next(e for e in data["images"] if e["name"] == "small")
    entry["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    with pytest.raises(FixtureError, match=r"small\.png.*000000000000.*fixture changed"):
        load_fixtures(fixture_copy)


def test_file_missing_from_manifest_set(fixture_copy: Path) -> None:
    (fixture_copy / "images" / "palette.png").unlink()
    with pytest.raises(FixtureError, match=r"palette\.png.*missing"):
        load_fixtures(fixture_copy)


def test_malformed_manifest_entry(fixture_copy: Path) -> None:
    manifest = fixture_copy / "manifest.json"
    data = json.loads(manifest.read_text())
    del data["images"][3]["sha256"]
    manifest.write_text(json.dumps(data))
    with pytest.raises(FixtureError, match=r"manifest\.json.*malformed entry #3"):
        load_fixtures(fixture_copy)


def test_load_fixtures_plain_folder(tmp_path: Path) -> None:
    for source, target in [
        ("small", "zebra.png"),
        ("panorama", "b.jpg"),
        ("chelsea", "a-cat.png"),
        ("coffee", "a.PNG"),
    ]:
        shutil.copy(PATHS[source], tmp_path / target)
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    fixtures = load_fixtures(tmp_path)
    assert [f.name for f in fixtures] == ["a", "a-cat", "b", "zebra"]
    assert [f.path.name for f in fixtures] == ["a.PNG", "a-cat.png", "b.jpg", "zebra.png"]
    assert all(f.role == "golden" and f.sha256 is None for f in fixtures)
    assert preprocess_batch([f.path for f in fixtures]).shape == (4, 3, 224, 224)
