"""The generated tests' collection: markers, the suite file appended to the arguments,
its node id outside the rootdir, and the parametrization per model x variant x image.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from parity.errors import ParityError
from parity.pytest_plugin.checks import check
from parity.pytest_plugin.options import (
    ALL_IMAGES,
    PARITY_MARKER,
    SHIPPED,
    SHIPPED_INDEX,
    ParityCase,
    ParityOptions,
)
from parity.pytest_plugin.state import STATE, ParityPlugin, plugin_of, torch_first
from parity.pytest_plugin.verdicts import has_rate_budgets

#: The file holding the generated test function.
SUITE = Path(__file__).resolve().parent.with_name("pytest_suite.py")


def check_case(config: pytest.Config, case: ParityCase) -> None:
    """Run one generated test (called by :func:`parity.pytest_suite.test_parity`)."""
    check(plugin_of(config), case)


# -- pytest hooks -------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    declared = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    from parity.backends import markers

    for name, description in {**PARITY_MARKER, **markers()}.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {description}")
    plugin = ParityPlugin(config, ParityOptions.from_config(config))
    config.stash[STATE] = plugin
    config.pluginmanager.register(plugin, "parity-session")
    if not plugin.options.models:
        return
    plugin.validate()
    if plugin.options.update_goldens and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            "parity: --parity-update-goldens rewrites the goldens once, before any test; it "
            "cannot run under pytest-xdist (-n). Run it without -n, then the suite with -n"
        )
    if plugin.options.update_goldens and not config.option.collectonly:
        try:  # the goldens are written here; before user modules may import TensorFlow
            torch_first()
        except ParityError as exc:
            raise pytest.UsageError(f"parity: {exc}") from None
    if not any(_is_suite(arg, config.invocation_params.dir) for arg in config.args):
        config.args.append(str(SUITE))
    config.pluginmanager.register(SuiteCollection(models=plugin.options.models), "parity-suite")
    if getattr(config.option, "dist", "no") == "load":  # -n N's default distribution
        from parity.pytest_plugin.xdist import BackendGroups

        config.pluginmanager.register(BackendGroups(), "parity-xdist")


def _is_suite(arg: str, base: Path) -> bool:
    try:
        return (base / arg.split("::")[0]).resolve() == SUITE
    except OSError:
        return False


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(
    module_path: Path, parent: pytest.Collector
) -> pytest.Module | None:
    """Give the suite a real node id when it lies outside the rootdir (a user's project).

    pytest names an initial path outside the rootdir ``""``, so the tests would read
    ``::test_parity[...]``, and ``--lf`` (which maps node ids back to files under the
    rootdir) would skip them. The absolute path keeps both working.
    """
    if module_path != SUITE or SUITE.is_relative_to(parent.config.rootpath):
        return None
    return _suite_module(parent)


def _suite_module(parent: pytest.Collector) -> pytest.Module:
    nodeid = None if SUITE.is_relative_to(parent.config.rootpath) else str(SUITE)
    return pytest.Module.from_parent(parent, path=SUITE, nodeid=nodeid)


class SuiteCollection:
    """Makes sure the suite is collected, and fails a session that collected none of it.

    pytest drops a collection argument that another one covers, so with the venv inside
    the project (``pytest`` from its root: argument ``.``) the appended suite path is
    dropped, and the walk from ``.`` never enters ``.venv`` (venvs and dot-folders are
    not collected) nor collects ``pytest_suite.py`` (not a ``test_*.py`` name): the
    session ran none of the parity tests and passed. Here the folders leading to the
    suite are walked, and only they (nothing else of the venv is collected), the suite
    becomes a module, and a session that still collected no parity test is a usage error.
    """

    def __init__(self, models: tuple[str, ...]) -> None:
        self.models = models
        self.session: pytest.Session | None = None
        #: Folders on the way to the suite that pytest would not have entered.
        self.opened: list[Path] = []
        self.items = 0

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    def _covered(self) -> bool:
        """Whether the suite is walked to from another argument (not an initial path)."""
        return self.session is not None and not self.session.isinitpath(SUITE)

    @pytest.hookimpl(tryfirst=True)
    def pytest_ignore_collect(self, collection_path: Path, config: pytest.Config) -> bool | None:
        if not self._covered():
            return None
        if collection_path == SUITE or collection_path in SUITE.parents:
            others = config.pluginmanager.subset_hook_caller("pytest_ignore_collect", [self])
            if others(collection_path=collection_path, config=config):
                self.opened.append(collection_path)
            return False
        if any(collection_path.is_relative_to(folder) for folder in self.opened):
            return True
        return None

    @pytest.hookimpl(wrapper=True)
    def pytest_collect_file(
        self, file_path: Path, parent: pytest.Collector
    ) -> Generator[None, list[pytest.Collector], list[pytest.Collector]]:
        collected = yield
        if file_path == SUITE and not any(isinstance(c, pytest.Module) for c in collected):
            collected = [*collected, _suite_module(parent)]
        return collected

    def pytest_itemcollected(self, item: pytest.Item) -> None:
        self.items += item.path == SUITE

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.items or session.testsfailed:
            return  # collection errors fail the session already
        raise pytest.UsageError(
            f"parity: --parity-models {','.join(self.models)} collected no parity test: pytest "
            f"collected no test_parity from {SUITE} (python_functions must match it, e.g. "
            "-o python_functions='test_*', and no conftest hook may drop the file)"
        )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "parity_case" not in metafunc.fixturenames or metafunc.definition.path != SUITE:
        return
    plugin = plugin_of(metafunc.config)
    params = []
    try:
        variants = plugin.variants()
        for model in plugin.options.models:
            session = plugin.session(model)
            for variant in variants:
                images = [(i, f.name) for i, f in enumerate(session.fixtures)]
                if has_rate_budgets(session, variant):
                    images.append((-1, ALL_IMAGES))
                for index, fixture in images:
                    case = ParityCase(
                        model, session.card.name, variant.name, variant.family, index, fixture
                    )
                    marks = [pytest.mark.parity, getattr(pytest.mark, variant.family)]
                    params.append(pytest.param(case, id=case.id, marks=marks))
            params += _shipped(model, session.card.name)
    except ParityError as exc:  # e.g. a bad --parity-fixtures folder: one line, no traceback
        raise pytest.Collector.CollectError(f"parity: {exc}") from None
    metafunc.parametrize("parity_case", params)


def _shipped(model: str, card: str) -> list[Any]:
    """One test per file the project ships of ``model`` ([tool.parity] artifacts), vs torch."""
    from parity.config import load_gate_config
    from parity.readers import sniff_runtime

    params = []
    for shipped in load_gate_config().shipped(card):
        runtime = sniff_runtime(shipped.path, shipped.runtime)[0]
        case = ParityCase(model, card, SHIPPED, runtime, SHIPPED_INDEX, str(shipped.path))
        marks = [pytest.mark.parity, getattr(pytest.mark, runtime)]
        params.append(pytest.param(case, id=f"{card}-shipped-{shipped.path.name}", marks=marks))
    return params
