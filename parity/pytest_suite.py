"""The generated parity tests: one function, parametrized by :mod:`parity.pytest_plugin`.

pytest collects this file only when ``--parity-models`` is given (the plugin appends its
path to the collection arguments); ``pytest_generate_tests`` then expands
``test_parity`` into one test per model x runtime variant x fixture image, with ids such
as ``mobilenet_v2-litert_int8-chelsea``. Nothing here is meant to be imported.
"""

from __future__ import annotations

import pytest

from parity.pytest_plugin import ParityCase, check_case


def test_parity(parity_case: ParityCase, request: pytest.FixtureRequest) -> None:
    """One image of one variant: vs its golden (and vs torch now with --parity-live)."""
    check_case(request.config, parity_case)
