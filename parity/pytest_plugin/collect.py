"""The generated tests' collection: markers, the suite file appended to the arguments,
its node id outside the rootdir, and the parametrization per model x variant x image.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from parity.errors import ParityError
from parity.pytest_plugin.checks import check
from parity.pytest_plugin.options import ALL_IMAGES, PARITY_MARKER, ParityCase, ParityOptions
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
    return pytest.Module.from_parent(parent, path=module_path, nodeid=str(SUITE))


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
    except ParityError as exc:  # e.g. a bad --parity-fixtures folder: one line, no traceback
        raise pytest.Collector.CollectError(f"parity: {exc}") from None
    metafunc.parametrize("parity_case", params)
