"""Per-pytest-session state (one Session per model, run errors) and the session hooks:
report header, JUnit class names, --parity-update-goldens, --parity-report (xdist too).
"""

from __future__ import annotations

import functools
import io
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from parity.errors import ParityError, RuntimeFailure
from parity.pytest_plugin.options import SHIPPED_INDEX, ParityCase, ParityOptions

if TYPE_CHECKING:
    import numpy as np

    from parity.harness import Session
    from parity.result import ParityReport
    from parity.variants import Variant

STATE = pytest.StashKey["ParityPlugin"]()


def plugin_of(config: pytest.Config) -> ParityPlugin:
    return config.stash[STATE]


def torch_first() -> None:
    """Import torch + torchvision now, or refuse if TensorFlow is already loaded."""
    from parity import lazy

    if not lazy.installed("torch") or "torchvision" in sys.modules:
        return
    if "tensorflow" in sys.modules:
        raise ParityError(
            "TensorFlow was imported before torch in this process; loading torchvision "
            "now would crash it. Import torch first in your conftest.py "
            "(import parity.lazy; parity.lazy.torch())"
        )
    lazy.torch()


def _case(item: pytest.Item) -> ParityCase | None:
    """The generated test's case, or None for any other test."""
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("parity_case") if callspec is not None else None
    return case if isinstance(case, ParityCase) else None


class RunFailed(Exception):
    """A variant could not produce outputs; the message is the test's failure text."""


#: The header line under ``pytest -n``: why it does not speed parity's tests up, what to use.
XDIST_ADVICE = (
    "parity: -n does not make these tests faster: each backend's variants already run in "
    "parallel worker processes (up to the cores), and every xdist worker adds a pytest "
    "process that sets each model up again (2 cores: -n 2 took 1.8x the serial time, "
    "bench/xdist.md); run them in a pytest run of their own without -n (-n 0)"
)


class ParityPlugin:
    """Per-pytest-session state: options, one Session per model, run errors, reports."""

    def __init__(self, config: pytest.Config, options: ParityOptions) -> None:
        self.config = config
        self.options = options
        self.sessions: dict[str, Session] = {}
        self.started: dict[str, float] = {}
        #: (model, variant) -> failure text of a variant that could not run.
        self.errors: dict[tuple[str, str], str] = {}
        #: model -> variants that generated tests checked, in first-use order.
        self.ran: dict[str, list[Variant]] = {}
        self.written: list[Path] = []
        self.report_errors: list[str] = []
        #: models whose goldens --parity-update-goldens rewrote: their tests fail this run.
        self.rewritten: set[str] = set()
        #: report dicts sent by pytest-xdist workers, merged into one report.
        self.worker_reports: list[dict[str, Any]] = []
        #: model -> the variants of the collected (selected) generated tests.
        self.collected: dict[str, list[Variant]] = {}
        #: model -> names of the variants already sent to the workers.
        self.fetched: dict[str, set[str]] = {}
        #: (model, variant) -> why its workers could not run (bad input, no reference).
        self.fetch_errors: dict[tuple[str, str], str] = {}
        #: the reports of the files the project ships ([tool.parity] artifacts), as checked.
        self.shipped: list[ParityReport] = []

    # -- shared state ---------------------------------------------------------------

    def session(self, model: str) -> Session:
        """The model's one :class:`Session` for this pytest session (torch not imported)."""
        if model not in self.sessions:
            from parity.harness import RunConfig, Session

            config = RunConfig(
                model=model,
                runtimes=self.options.runtimes,
                fixtures=self.options.fixtures,
                tolerances=self.options.tolerances,
                goldens=self.options.goldens,
            )
            self.started[model] = time.perf_counter()
            session = Session(config)
            session.fetch = functools.partial(self.fetch, model)
            self.sessions[model] = session
        return self.sessions[model]

    def fetch(self, model: str, variant: Variant) -> None:
        """Run ``variant`` in worker processes (once), with the variants this process will
        check: every collected variant of ``model``; under pytest-xdist, where a worker does
        not know its share in advance, those of ``variant``'s backend. A crashing runtime
        is then a failed variant (:class:`~parity.errors.RuntimeFailure` from
        ``Session.outputs``); bad input raises :class:`ParityError` for each of them."""
        done = self.fetched.setdefault(model, set())
        if variant.name in done:
            if (model, variant.name) in self.fetch_errors:
                raise ParityError(self.fetch_errors[(model, variant.name)])
            return
        xdist = hasattr(self.config, "workerinput")
        wanted = [variant] + [
            v for v in self.collected.get(model, ())
            if v.name not in done and v != variant and (not xdist or v.family == variant.family)
        ]  # fmt: skip
        done.update(v.name for v in wanted)
        try:
            self.session(model).prefetch(wanted)
        except ParityError as exc:
            for each in wanted:
                self.fetch_errors[(model, each.name)] = str(exc)
            raise

    def variants(self) -> list[Variant]:
        """The torch reference first, then the requested variants."""
        from parity.variants import REFERENCE, VARIANTS, resolve_variants

        chosen = resolve_variants(self.options.runtimes)
        return [VARIANTS[REFERENCE], *(v for v in chosen if not v.reference)]

    def validate(self) -> None:
        """Unknown models or runtimes are usage errors, before any collection."""
        from parity.zoo import get_card

        try:
            self.variants()
            for model in self.options.models:
                get_card(model)
        except ParityError as exc:
            raise pytest.UsageError(f"parity: {exc}") from None

    def outputs(self, model: str, variant: Variant, test_id: str) -> dict[str, np.ndarray]:
        """A variant's outputs on the batch (run once), or :class:`RunFailed`."""
        key = (model, variant.name)
        if key in self.errors:
            raise RunFailed(self.errors[key])
        try:
            obtained, _ = self.session(model).outputs(variant)
        except ParityError as exc:
            self.errors[key] = f"{model} / {variant.name}: {exc}"
            raise RunFailed(self.errors[key]) from None
        except RuntimeFailure as exc:  # a runtime failing on its artifact (in its worker)
            self.errors[key] = (
                f"{variant.name} failed to run {model} (first seen in {test_id}): {exc}"
            )
            raise RunFailed(self.errors[key]) from None
        return obtained

    # -- session-level hooks --------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if not self.options.models:
            return []
        mode = "goldens + live" if self.options.live else "goldens"
        names = ", ".join(v.name for v in self.variants())
        lines = [f"parity: models {', '.join(self.options.models)}; {names}; vs {mode}"]
        if getattr(config.option, "numprocesses", None):
            lines.append(XDIST_ADVICE)
        return lines

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """JUnit ``classname`` ``parity.<model>.<variant>``: stable, and free of the path
        parity is installed at (pytest derives it from the node id, which holds the path of
        ``pytest_suite.py``: a venv's site-packages when parity is installed)."""
        case = _case(item)
        if case is None:
            return
        from _pytest.junitxml import xml_key  # no public API sets a classname

        xml = item.config.stash.get(xml_key, None)
        if xml is not None:
            xml.node_reporter(item.nodeid).add_attribute(
                "classname", f"parity.{case.card}.{case.variant}"
            )

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Note the collected variants (what :meth:`fetch` runs); --parity-update-goldens:
        rewrite the goldens after collection, before any test."""
        config = session.config
        from parity.variants import VARIANTS

        for case in filter(None, map(_case, session.items)):
            if case.index == SHIPPED_INDEX:  # a file the project ships: run on its own
                continue
            collected = self.collected.setdefault(case.model, [])
            if VARIANTS[case.variant] not in collected:
                collected.append(VARIANTS[case.variant])
        if not (self.options.update_goldens and self.options.models):
            return
        if config.option.collectonly or hasattr(config, "workerinput"):
            return
        if session.testsfailed and not config.option.continue_on_collection_errors:
            return  # pytest stops on collection errors; write nothing
        from rich.console import Console

        from parity.report import print_golden_moves

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        width = config.get_terminal_writer().fullwidth
        for model in self.options.models:
            try:
                torch_first()  # the goldens are written from torch weights loaded here
                parity_session = self.session(model)
                parity_session.prefetch([])  # the reference alone: this model's tests fail
                moves = parity_session.golden_moves()
                buffer = io.StringIO()
                console = Console(file=buffer, width=width, color_system=None, highlight=False)
                print_golden_moves(parity_session.card.name, moves, console)
                parity_session.write_goldens()
                self.rewritten.add(model)
            except (ParityError, RuntimeFailure) as exc:  # RuntimeFailure: no torch reference
                raise pytest.UsageError(f"parity: cannot update goldens: {exc}") from None
            text = buffer.getvalue() + f"wrote {parity_session.goldens_folder}\n"
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_sep("-", f"parity: updated goldens of {model}")
                reporter.write(text)
            else:
                sys.stdout.write(text)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """--parity-report: the gate reports of the variants that ran (under pytest-xdist,
        each worker sends its part and the controller writes one merged report)."""
        if self.options.report is None:
            return
        from parity.report import gate_to_dict, merge_gates, write_reports

        reports = []
        for model in self.ran:
            try:
                reports.append(self.report(model))
            except ParityError as exc:  # e.g. weights that never loaded: say so, report the rest
                self.report_errors.append(f"parity report: {model} left out: {exc}")
        reports += self.shipped
        worker = getattr(session.config, "workeroutput", None)
        if worker is not None:
            worker["parity_report"] = gate_to_dict(reports) if reports else None
            worker["parity_report_errors"] = self.report_errors
            return
        gates = [gate_to_dict(reports)] if reports else []
        gates += self.worker_reports
        if gates:
            self.written = write_reports(merge_gates(gates), self.options.report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: collect a finished worker's part of the report."""
        output = getattr(node, "workeroutput", {})
        if output.get("parity_report"):
            self.worker_reports.append(output["parity_report"])
        self.report_errors.extend(output.get("parity_report_errors") or ())

    def report(self, model: str) -> ParityReport:
        """One model's :class:`ParityReport` over the whole batch (outputs are cached)."""
        from parity.judge import Judging, judge

        session = self.sessions[model]
        failures = {name: error for (each, name), error in self.errors.items() if each == model}
        judging = Judging(tuple(self.ran[model]), self.options.live, True, failures, "row")
        results = list(judge(session, judging))
        return session.report(results, started=self.started[model])

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.written or self.report_errors:
            terminalreporter.write_sep("-", "parity report")
            for path in self.written:
                terminalreporter.write_line(f"parity report: {path}")
            for line in self.report_errors:
                terminalreporter.write_line(line, red=True)
