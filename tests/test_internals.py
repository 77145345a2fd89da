"""Private framework internals sit behind one guarded adapter each: a release without them
is one line naming the version read from, not an AttributeError in a runner."""

from __future__ import annotations

import pytest

from parity.backends.keras import internals as keras_internals
from parity.backends.litert import internals as litert_internals
from parity.errors import ParityError


def test_a_missing_litert_internal_names_the_version() -> None:
    with pytest.raises(ParityError, match=r"ai-edge-litert .*_get_ops_details is gone.*2\.3\.0"):
        litert_internals.ops_details(object())


@pytest.mark.parametrize(
    ("read", "name"),
    [
        (keras_internals.nodes_by_depth, "Model._nodes_by_depth"),
        (keras_internals.producer, "KerasTensor._keras_history"),
        (keras_internals.first_call_inputs, "Layer._inbound_nodes"),
    ],
)
def test_a_missing_keras_internal_names_the_version(read, name) -> None:
    with pytest.raises(ParityError, match=rf"keras .*{name} is gone.*3\.15\.1"):
        read(object())
