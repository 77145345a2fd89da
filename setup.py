"""Package layout that pyproject.toml cannot express: the bundled assets.

The repository's top-level ``models/`` and ``fixtures/`` are the source of the default
model cards, fixture and calibration images, goldens and tolerance file. They ship in the
wheel as package data under ``parity/_bundled/`` (read with ``importlib.resources``, see
``parity.paths.bundled_dir``); an editable install reads them where they are.
"""

from setuptools import find_packages, setup

BUNDLED = {"parity._bundled.models": "models", "parity._bundled.fixtures": "fixtures"}

setup(
    packages=[*find_packages(include=["parity", "parity.*"]), *BUNDLED],
    package_dir=BUNDLED,
    package_data={
        "parity": ["py.typed"],
        "parity.render": ["report.css"],
        "parity.converters": ["*.toml"],  # the converter environments' specs
        "parity._bundled.models": ["*.toml", "*.calibrated.npz", "*/*.py"],
        "parity._bundled.fixtures": [
            "*.toml",
            "*.json",
            "*.md",
            "*.py",
            "images/*",
            "calibration/*",
            "goldens/*/*",
        ],
    },
    exclude_package_data={"": ["*.obtained.*", "*.pyc"]},
)
