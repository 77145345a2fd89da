"""Fixtures of the runtime tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from parity.harness import Session
from parity.variants import VARIANTS, Variant


@pytest.fixture(scope="module")
def module_runs(session_for: Callable[[str], Session]) -> Iterator[Callable[..., None]]:
    """``module_runs(model, *variants)``: run the variants in one prefetch (one worker per
    framework, not a worker start per variant). At the module's end the session forgets
    their outputs: the taps are memory-mapped and every page a check read stayed in the
    pytest process (~64 MiB per mobilenet_v2 variant); the artifacts stay cached."""
    held: list[tuple[Session, Variant]] = []

    def run(model: str, *names: str) -> None:
        session = session_for(model)
        variants = [VARIANTS[name] for name in names]
        session.prefetch(variants)
        held.extend((session, variant) for variant in variants)

    yield run
    for session, variant in held:
        session.forget(variant)
