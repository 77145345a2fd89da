"""Under ``pytest -n N``: each backend's generated tests on one xdist worker.

A generated test's variant runs once per pytest process, with the other variants of its
backend (one worker process per backend, :meth:`.state.ParityPlugin.fetch`). With
xdist's default ``load`` distribution every xdist worker got some tests of each backend
and ran that backend again: ``-n 2`` took 1.9x the serial time (``bench/xdist.md``). The
scheduler here is xdist's ``load`` for every other test and one unit per model x backend
for parity's (``LoadScopeScheduling`` with the scope read from the test id), so a backend
runs once. (``--dist loadgroup`` with ``xdist_group`` marks would say the same, but
pytest-xdist 3.8 sets a node id attribute that pytest 9 no longer reads: it does not
group there.) An explicit ``--dist`` is left alone.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from parity.pytest_plugin.options import SHIPPED

#: The generated test's id: ``test_parity[<model>-<variant>-<image>]``.
_CASE = re.compile(r"::test_parity\[(.+)\]$")


def backend_scope(nodeid: str) -> str | None:
    """``<model>-<backend>`` of a generated test's node id, ``None`` for any other test."""
    from parity.variants import VARIANTS

    found = _CASE.search(nodeid)
    if found is None:
        return None
    case = found.group(1)
    for name, variant in VARIANTS.items():
        model, dash, _ = case.partition(f"-{name}-")
        if dash:
            return f"{model}-{variant.family}"
    model, dash, _ = case.partition(f"-{SHIPPED}-")
    return f"{model}-{SHIPPED}" if dash else None


class BackendGroups:
    """Registered on the xdist controller when the distribution is ``load``."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        class ByBackend(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return backend_scope(nodeid) or nodeid

        return ByBackend(config, log)
