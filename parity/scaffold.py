"""``parity init``: scaffold a parity project in a directory.

Writes a ``[tool.parity]`` table (into ``pyproject.toml``, or ``parity.toml`` where there is
none), a cards folder with a commented example card, a fixtures folder seeded with the
bundled images (or the config points at the user's own folder), a tolerance file that
extends the bundled one without borrowing budgets for the project's models, and a
``.gitignore`` line for obtained arrays. Nothing existing is overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from parity import atomic
from parity.errors import ParityError
from parity.fixtures import MANIFEST, load_manifest
from parity.paths import DEFAULT_CARDS, PARITY_TOML, bundled_dir, parity_table
from parity.zoo import DEFAULT_MODEL

EXAMPLE_CARD = """\
# An example model card: copy it to <name>.toml (files starting with "_" are not cards)
# and edit. Every key is documented in docs/model-cards.md.

# The torch builder: torchvision's, or your own "package.module:function" (imported with
# the project root on sys.path), called as builder(weights=None, num_classes=N, **builder_kwargs).
builder = "torchvision.models:mobilenet_v3_small"
num_classes = 1000
# builder_kwargs = { dropout = 0.0 }
# keras_twin = "mobilenet_v2"   # only for architectures parity can port to Keras

[weights]
# "calibrated" (seeded init + BatchNorm re-estimated on the bundled calibration images),
# a torchvision weights name ("IMAGENET1K_V1"), or a state_dict file relative to this card
# ("weights/finetuned.pt").
default = "calibrated"

[preprocess]
preset = "torchvision-imagenet"   # resize 256, crop 224, ImageNet mean/std
# resize = [256, 256]
# crop = [224, 224]

[taps]
# Layers compared in every runtime: name = "module.path" (its output) or "input:module".
stem = "features.0"
blocks = ["features.{1..12}"]
pooled = "input:classifier"
logits = "classifier"
"""

TOLERANCES = """\
# Tolerance budgets of this project (see the bundled file for the metrics). The bundled
# rules come first ("extends"); rules here are added on top, most specific key wins.
# A model with no rule of its own is judged by the bundled default and its report says
# so: measure its budgets with `parity budgets --model NAME --write`.
extends = "bundled"
"""

GITIGNORE_LINES = ("parity/goldens/*/*.obtained.*", "parity-report/")


def _config_text(fixtures: str, models: list[str]) -> str:
    return (
        f"models = {json.dumps(models)}    # the cards `parity check` gates\n"
        'runtimes = ["ort_dynamo", "ort_torchscript"]  # variants, or families (onnxruntime,\n'
        "                                  # keras, litert, ...: every member, n/a rows for\n"
        "                                  # those this machine cannot run, e.g. CUDA)\n"
        f'cards = "{DEFAULT_CARDS}"\n'
        f'fixtures = "{fixtures}"\n'
        'tolerances = "parity/tolerances.toml"\n'
        'goldens = "parity/goldens"\n'
        'report = "parity-report"\n'
        "strict = false                    # true: a variant that does not apply fails\n"
        "# The files you ship (made by your own conversion), checked on every run against\n"
        "# their model like the built-in variants; runtime, input layout and taps are read\n"
        "# from the file when left out (paths relative to this file):\n"
        '# artifacts = [{path = "dist/model.tflite", model = "mynet", runtime = "litert",\n'
        '#               layout = "NHWC", taps = "dist/taps.toml"}]\n'
    )


def _seed_fixtures(folder: Path) -> str:
    """Copy the bundled fixture images (not the calibration set) with their manifest, into
    a folder that holds nothing yet; one that does is the user's: kept as it is."""
    if folder.is_dir() and any(folder.iterdir()):
        held = sum(1 for p in folder.rglob("*") if p.is_file())
        return f"kept {folder}: it already holds {held} files (the bundled images not copied)"
    bundled = bundled_dir("fixtures")
    fixtures = load_manifest(bundled)
    entries = []
    for fixture in fixtures:
        target = folder / "images" / fixture.path.name
        atomic.write_bytes(target, fixture.path.read_bytes())
        entries.append(
            {"name": fixture.name, "file": f"images/{target.name}", "role": fixture.role,
             "sha256": fixture.sha256}
        )  # fmt: skip
    atomic.write_text(folder / MANIFEST, json.dumps({"images": entries}, indent=2) + "\n")
    return f"wrote {folder}: the bundled fixture images and their manifest"


def _new_file(path: Path, text: str, what: str) -> str:
    """Write ``path`` unless something is there already (kept: it is the user's)."""
    if path.exists() or path.is_symlink():
        return f"kept {path}: it exists (not overwritten; {what} not written)"
    atomic.write_text(path, text)
    return f"wrote {path}: {what}"


def init_project(root: Path, fixtures: Path | None = None) -> list[str]:
    """Scaffold ``root``; returns one line per file written or kept (``wrote ...``,
    ``kept ...``): nothing that exists is overwritten. ``fixtures``: the user's images."""
    root = root.resolve()
    pyproject = root / "pyproject.toml"
    if (root / PARITY_TOML).is_file() or (
        pyproject.is_file() and parity_table(pyproject) is not None  # parses it: bad TOML is
    ):  # one line, and a file parity cannot read is never rewritten
        raise ParityError(f"{root}: already a parity project (has a parity config)")
    done = []
    if fixtures is None:
        fixtures_value = "parity/fixtures"
        done.append(_seed_fixtures(root / fixtures_value))
    else:
        if not fixtures.is_dir():
            raise ParityError(f"{fixtures}: no such fixtures directory")
        folder = fixtures.resolve()
        inside = folder.is_relative_to(root)
        fixtures_value = (folder.relative_to(root) if inside else folder).as_posix()
    text = _config_text(fixtures_value, [DEFAULT_MODEL])
    if pyproject.is_file():
        atomic.write_text(pyproject, f"{pyproject.read_text()}\n[tool.parity]\n{text}")
        done.append(f"wrote {pyproject}: [tool.parity]")
    else:
        done.append(_new_file(root / PARITY_TOML, f"# parity project config\n{text}", "config"))
    cards = root / DEFAULT_CARDS
    done.append(_new_file(cards / "_example.toml", EXAMPLE_CARD, "a commented example card"))
    tolerances = root / "parity" / "tolerances.toml"
    done.append(_new_file(tolerances, TOLERANCES, "budgets (extends the bundled file)"))
    gitignore = root / ".gitignore"
    existing = gitignore.read_text() if gitignore.is_file() else ""
    missing = [line for line in GITIGNORE_LINES if line not in existing.splitlines()]
    if missing:
        prefix = "\n" if existing and not existing.endswith("\n") else ""
        atomic.write_text(gitignore, existing + prefix + "\n".join(missing) + "\n")
        done.append(f"wrote {gitignore}: {', '.join(missing)}")
    return done
