"""The parity gate as pytest tests: generated per model x runtime x image, plus fixtures.

Installed with parity under the ``pytest11`` entry point (``parity =
"parity.pytest_plugin"``), so it is loaded in every pytest run of an environment that
has parity. It does nothing until asked: without ``--parity-models`` it only provides
the fixtures below and registers its markers.

Generated tests
---------------
``pytest --parity-models mobilenet_v2 --parity-runtimes litert_int8`` collects, without
a test file, one test per model x variant x fixture image, plus the torch reference's
own golden check::

    parity/pytest_suite.py::test_parity[mobilenet_v2-torch-chelsea]
    parity/pytest_suite.py::test_parity[mobilenet_v2-litert_int8-chelsea]

How they get in: ``pytest_configure`` appends the path of :mod:`parity.pytest_suite` (one
function, ``test_parity(parity_case)``) to ``config.args``, the collection arguments, and
``pytest_generate_tests`` parametrizes it from the options. The file is then an ordinary
initial path: collected even though its name does not match ``python_files``, listed by
``--collect-only``, selected by ``-k``/``-m``, re-runnable by node id, and reported like
any other test. Nothing is appended if the suite is already among the arguments. Outside
the rootdir the suite's node id is its absolute path (pytest would otherwise name it
``""``), so ``--lf`` and re-running by node id work; ``-k
mobilenet_v2-litert_int8-chelsea`` is the short way to re-run one case. (A project whose
``python_functions`` setting excludes ``test_*`` excludes ``test_parity`` too.)

A budget that is a rate over the fixture set (``min_top1_agreement = 0.1875``: 3 of 16
images) says nothing about one image: per-image tests judge every other budget (and
rates of 1, which mean "every image"), and a variant with such a rate also gets one
whole-set test, ``mobilenet_v2-litert_int8-all_images``, that judges the rates and names
the images that disagree. Together they decide exactly what ``parity check`` decides.

Each variant runs once per pytest session on the whole fixture batch (one
:class:`~parity.harness.Session` per model, shared with the ``parity_session`` fixture);
each test only judges its own image. By default a test compares its image with the
stored goldens (the regression gate; the torch test checks the reference itself);
``--parity-live`` also compares every runtime with torch now.

Options
-------
``--parity-models M[,M]``      model cards (names or ``.toml`` paths); comma list or repeatable.
``--parity-runtimes R[,R]``    variants (``ort_dynamo``) or families (``litert``); default:
                               the default variants (both ONNX exports).
``--parity-live``              also compare each runtime with torch now, not only with goldens.
``--parity-update-goldens``    regenerate the goldens from torch before the tests, printing
                               what moved; the tests then run against the new goldens.
                               Explicit only: goldens are never rewritten otherwise.
``--parity-report DIR``        at session end, write the gate reports (JSON, Markdown, JUnit
                               XML, HTML) of the variants that ran.
``--parity-fixtures DIR``      fixture images (default: the bundled set).
``--parity-goldens DIR``       golden store root (default: ``fixtures/goldens``).
``--parity-tolerances FILE``   tolerance TOML (default: ``fixtures/tolerances.toml``).

Markers
-------
Every generated test carries ``parity`` and its runtime family: ``torch``,
``onnxruntime``, ``keras`` or ``litert`` (so ``-m "not litert"`` works). The plugin
registers these markers itself, so ``--strict-markers`` projects need not declare them.

Fixtures (for your own tests)
-----------------------------
``parity_session``     factory, ``parity_session("mobilenet_v2") -> Session``: the model's
                       shared session (fixtures, batch, reference, ``outputs(variant)``,
                       ``image_verdict``, goldens); the same object the generated tests use.
                       The ``--parity-*`` options (fixtures, goldens, tolerances, runtimes)
                       apply to it.
``parity_check``       callable ``(model, variant) -> VariantResult``: a live check of one
                       variant (name or :class:`~parity.variants.Variant`) vs torch now,
                       every tap, every image; assert ``result.passed``, read
                       ``result.verdict.explain()``.
``parity_preprocess``  callable ``(path, model=None) -> np.ndarray``: the model card's
                       preprocessing spec applied to one image file, as the float32
                       ``(1, 3, H, W)`` batch every runtime receives. ``model`` defaults to
                       the first ``--parity-models`` entry, else ``mobilenet_v2``.

Failures
--------
A failing test prints, without a traceback: the per-tap table of its image (max_abs_norm
vs budget, 1-cosine vs budget, SQNR, status, ``<- first`` on the first failing tap), the
first divergent tap (:meth:`~parity.compare.VariantVerdict.explain`), where the obtained
arrays were written (beside the golden), and what to do: the command that accepts the
change if the torch reference moved on purpose, or the budget to widen if only the
runtime moved. A stale or missing golden fails each test of the model with its message.

Import order
------------
torch and torchvision must be imported before TensorFlow in one process. With
``--parity-models`` the plugin imports them at configure time. If your own test modules
import TensorFlow at import time and use the fixtures without ``--parity-models``, import
torch first in your ``conftest.py`` (``import parity.lazy; parity.lazy.torch()``); the
fixtures refuse to start torch after TensorFlow instead of crashing the interpreter.
"""

from __future__ import annotations

import dataclasses
import io
import math
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from parity.errors import ParityError

if TYPE_CHECKING:
    import numpy as np

    from parity.compare import VariantVerdict
    from parity.harness import Session
    from parity.result import ParityReport, VariantResult
    from parity.variants import Variant

#: The file holding the generated test function.
SUITE = Path(__file__).resolve().with_name("pytest_suite.py")

#: The plugin's own marker; each backend adds its family's (parity.backends.markers).
PARITY_MARKER = {"parity": "parity gate test generated by --parity-models (parity.pytest_plugin)"}

_DEFAULT_MODEL = "mobilenet_v2"

#: Budgets that are rates over the fixture set (a fraction of images), not per-image bounds.
RATE_KEYS = ("min_top1_agreement", "min_top5_overlap")
#: The fixture part of the id of a model x variant's whole-set test.
ALL_IMAGES = "all_images"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity", "numerical parity gate (parity.pytest_plugin)")
    group.addoption(
        "--parity-models",
        action="append",
        default=[],
        metavar="M[,M]",
        help="generate parity tests for these model cards (names or .toml paths); "
        "comma list or repeatable",
    )
    group.addoption(
        "--parity-runtimes",
        action="append",
        default=[],
        metavar="R[,R]",
        help="runtime variants (ort_dynamo) or families (onnxruntime, keras, litert); "
        "comma list or repeatable; default: the default variants",
    )
    group.addoption(
        "--parity-live",
        action="store_true",
        help="also compare every runtime with torch now (default: goldens only)",
    )
    group.addoption(
        "--parity-update-goldens",
        action="store_true",
        help="regenerate the goldens from torch before the tests, printing what moved",
    )
    group.addoption(
        "--parity-report",
        type=Path,
        metavar="DIR",
        help="write the gate reports (JSON, Markdown, JUnit XML, HTML) at session end",
    )
    group.addoption(
        "--parity-fixtures", type=Path, metavar="DIR", help="fixture images (default: bundled)"
    )
    group.addoption(
        "--parity-goldens",
        type=Path,
        metavar="DIR",
        help="golden store root (default: fixtures/goldens)",
    )
    group.addoption(
        "--parity-tolerances",
        type=Path,
        metavar="FILE",
        help="tolerance TOML (default: fixtures/tolerances.toml)",
    )


def _split(values: Sequence[str]) -> tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``, keeping order, dropping duplicates."""
    out: list[str] = []
    for value in values:
        out.extend(v.strip() for v in value.split(",") if v.strip() and v.strip() not in out)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class ParityOptions:
    """The ``--parity-*`` options, with paths made absolute (tests may chdir)."""

    models: tuple[str, ...] = ()
    runtimes: tuple[str, ...] | None = None
    live: bool = False
    update_goldens: bool = False
    report: Path | None = None
    fixtures: Path | None = None
    goldens: Path | None = None
    tolerances: Path | None = None

    @classmethod
    def from_config(cls, config: pytest.Config) -> ParityOptions:
        base = config.invocation_params.dir

        def path(name: str) -> Path | None:
            value = config.getoption(name)
            return None if value is None else (base / value).resolve()

        models = _split(config.getoption("parity_models") or [])
        return cls(
            # a card given as a path keeps working if a test changes directory
            models=tuple(str((base / m).resolve()) if m.endswith(".toml") else m for m in models),
            runtimes=_split(config.getoption("parity_runtimes") or []) or None,
            live=bool(config.getoption("parity_live")),
            update_goldens=bool(config.getoption("parity_update_goldens")),
            report=path("parity_report"),
            fixtures=path("parity_fixtures"),
            goldens=path("parity_goldens"),
            tolerances=path("parity_tolerances"),
        )


@dataclasses.dataclass(frozen=True)
class ParityCase:
    """One generated test: one image of one variant of one model."""

    model: str  # as given on the command line (card name or .toml path)
    card: str  # the card's name, for ids
    variant: str
    family: str
    index: int  # position of the image in the fixture batch; -1: the whole-set test
    fixture: str

    @property
    def id(self) -> str:
        return f"{self.card}-{self.variant}-{self.fixture}"


_STATE = pytest.StashKey["ParityPlugin"]()


def _plugin(config: pytest.Config) -> ParityPlugin:
    return config.stash[_STATE]


def _torch_first() -> None:
    """Import torch + torchvision now, or refuse if TensorFlow is already loaded."""
    from parity import lazy

    if not lazy.installed("torch") or "torchvision" in sys.modules:
        return
    if "tensorflow" in sys.modules:
        raise ParityError(
            "TensorFlow was imported before torch in this process; loading torchvision "
            "now would crash it. Import torch first in your conftest.py "
            "(import parity.lazy; parity.lazy.torch()) or run with --parity-models"
        )
    lazy.torch()


class _RunFailed(Exception):
    """A variant could not produce outputs; the message is the test's failure text."""


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
            self.sessions[model] = Session(config)
        return self.sessions[model]

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
        """A variant's outputs on the batch (run once), or :class:`_RunFailed`."""
        key = (model, variant.name)
        if key in self.errors:
            raise _RunFailed(self.errors[key])
        try:
            obtained, _ = self.session(model).outputs(variant)
        except ParityError as exc:
            self.errors[key] = f"{model} / {variant.name}: {exc}"
            raise _RunFailed(self.errors[key]) from None
        except Exception as exc:  # a runtime failing on its artifact
            detail = "".join(traceback.format_exception(exc)).rstrip()
            self.errors[key] = (
                f"{variant.name} failed to run {model} (first seen in {test_id}): "
                f"{type(exc).__name__}: {exc}"
            )
            raise _RunFailed(f"{self.errors[key]}\n\n{detail}") from None
        return obtained

    # -- one generated test ---------------------------------------------------------

    def check(self, case: ParityCase) -> None:
        """Judge one image; ``pytest.fail`` with a readable message if it does not pass."""
        from parity.variants import VARIANTS

        variant = VARIANTS[case.variant]
        if case.model in self.rewritten:  # like --force-regen: never green while regenerating
            pytest.fail(
                f"the goldens of {case.card} were rewritten by --parity-update-goldens in this "
                "run (what moved is printed above); rerun without it to check against them",
                pytrace=False,
            )
        session, obtained, message = self._prepare(case, variant)
        if message is not None:  # failing outside the except block: no chained exception
            pytest.fail(message, pytrace=False)
        assert session is not None and obtained is not None
        store = session.goldens
        modes = ["golden"]
        if self.options.live and not variant.reference:
            modes.append("live")
        if case.index < 0:
            self.check_rates(case, session, variant, modes)
            return
        verdicts = [(mode, image_verdict(session, variant, case.index, mode)) for mode in modes]
        failed = [(mode, v) for mode, v in verdicts if not v.passed]
        if not failed:
            return
        mode, verdict = failed[0]
        first = verdict.first_failure
        assert first is not None
        sections = [
            f"{case.variant} vs {'golden' if mode == 'golden' else 'torch'} on "
            f"'{case.fixture}': first divergent tap '{first.tap.name}' "
            f"({'; '.join(first.failures)})"
        ]
        for mode, verdict in failed:
            against = "its golden" if mode == "golden" else "torch now (live)"
            sections.append(
                f"{case.card} / {case.variant} vs {against}, image '{case.fixture}':\n"
                + "\n".join("  " + line for line in tap_table_lines(verdict))
                + f"\n{verdict.explain([case.fixture])}"
            )
        try:
            written = str(store.write_obtained(case.fixture, case.variant, obtained, case.index))
        except OSError as exc:  # e.g. goldens in a read-only install
            written = f"not written ({exc})"
        sections.append(f"obtained arrays: {written}\ngolden: {store.npz_path(case.fixture)}")
        sections.append(self.advice(case, session, dict(failed)))
        pytest.fail("\n\n".join(sections), pytrace=False)

    def check_rates(
        self, case: ParityCase, session: Session, variant: Variant, modes: Sequence[str]
    ) -> None:
        """The whole-set test: budgets that are rates over the images (top-1 agreement)."""
        from parity.compare import merge_verdicts

        names = [f.name for f in session.fixtures]
        sections = []
        failed = {}
        for mode in modes:
            per_image = [session.image_verdict(variant, i, mode) for i in range(len(names))]
            merged = rejudged(merge_verdicts(per_image, session.policy, case.card), rates=True)
            if merged.passed:
                continue
            failed[mode] = merged
            first = merged.first_failure
            assert first is not None
            against = "its golden" if mode == "golden" else "torch now (live)"
            lines = [
                f"{case.card} / {case.variant} vs {against}, over {len(names)} images: "
                f"tap '{first.tap.name}': {'; '.join(first.failures)}"
            ]
            index = [t.tap.name for t in per_image[0].taps].index(first.tap.name)
            for key, label in (("top1_agreement", "top-1"), ("top5_overlap", "top-5")):
                if any(key in failure for failure in first.failures):
                    bad = [
                        f"{name} ({v.taps[index].metrics.get(key):.2g})"
                        for name, v in zip(names, per_image, strict=True)
                        if (v.taps[index].metrics.get(key) or 0.0) < 1.0
                    ]
                    lines.append(f"  images where {label} differs: {', '.join(bad)}")
            sections.append("\n".join(lines))
        if not sections:
            return
        sections.append(
            "(the per-image tests judge every other budget; this one judges the budgets "
            "that are rates over the fixture set)"
        )
        sections.append(self.advice(case, session, failed))
        pytest.fail("\n\n".join(sections), pytrace=False)

    def _prepare(
        self, case: ParityCase, variant: Variant
    ) -> tuple[Session | None, dict[str, np.ndarray] | None, str | None]:
        """Session (goldens checked fresh) and outputs, or the failure message."""
        from parity.applicability import not_applicable_reason
        from parity.golden import MissingGoldenError, StaleGoldenError

        ran = self.ran.setdefault(case.model, [])  # what --parity-report covers
        if variant not in ran:
            ran.append(variant)
        try:
            _torch_first()
            session = self.session(case.model)
            reason = not_applicable_reason(variant, session.card)
            if reason is not None:  # a row in the report, a skip here (pytest.skip raises)
                pytest.skip(f"n/a: {reason}")
            _ = session.goldens  # stale or missing goldens fail here, with their message
            return session, self.outputs(case.model, variant, case.id), None
        except MissingGoldenError as exc:
            return None, None, f"{exc}\n\n{self.accept_text(case, 'to create them')}"
        except StaleGoldenError as exc:
            return None, None, f"{exc}\n\n{self.accept_text(case)}"
        except (ParityError, _RunFailed) as exc:
            return None, None, str(exc)

    def advice(self, case: ParityCase, session: Session, failed: dict[str, Any]) -> str:
        """What to do: accept a moved reference, or widen a budget for a moved runtime."""
        from parity.variants import REFERENCE, VARIANTS

        lines = []
        tolerances = session.policy.source
        if "golden" in failed:
            torch_moved = True
            if case.variant != REFERENCE:
                indices = [case.index] if case.index >= 0 else range(len(session.fixtures))
                try:
                    torch = VARIANTS[REFERENCE]
                    torch_moved = not all(
                        session.image_verdict(torch, i, "golden").passed for i in indices
                    )
                except Exception:  # no torch here: cannot tell, offer both ways
                    torch_moved = True
            if case.variant == REFERENCE:
                lines.append(
                    "the torch reference itself moved away from the golden (weights, "
                    "torch/torchvision/numpy/Pillow versions or preprocessing code)."
                )
            elif torch_moved:
                lines.append(
                    "torch moved away from this golden too: the golden is out of date, "
                    "not only this runtime."
                )
            if torch_moved:
                lines.append(self.accept_text(case))
            else:
                first = failed["golden"].first_failure
                lines.append(
                    f"torch still matches this golden: the drift is in {case.variant} (its "
                    "export or runtime), so regenerating goldens would not change it. If it "
                    f'is acceptable, widen [budget."{case.card}/{case.variant}/'
                    f'{first.tap.name}"] in {tolerances}.'
                )
        if "live" in failed:
            first = failed["live"].first_failure
            lines.append(
                f"{case.variant} disagrees with torch now; goldens play no part in that. If "
                f'acceptable, widen [budget."{case.card}/{case.variant}/{first.tap.name}"] '
                f"in {tolerances}."
            )
        return "\n".join(lines)

    def accept_text(self, case: ParityCase, lead: str = "to accept the change if intended") -> str:
        """The exact commands that regenerate this model's goldens from torch."""
        argv = ["pytest", "--parity-models", case.model, "--parity-runtimes", case.variant]
        for flag, value in (
            ("--parity-fixtures", self.options.fixtures),
            ("--parity-goldens", self.options.goldens),
            ("--parity-tolerances", self.options.tolerances),
        ):
            if value is not None:
                argv += [flag, str(value)]
        argv.append("--parity-update-goldens")
        text = f"{lead}:\n  {shlex.join(argv)}"
        if self.options.fixtures is None and self.options.goldens is None:
            text += f"\n  (or: {shlex.join(['parity', 'update-goldens', '--model', case.model])})"
        return text

    # -- session-level hooks --------------------------------------------------------

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        if not self.options.models:
            return []
        mode = "goldens + live" if self.options.live else "goldens"
        names = ", ".join(v.name for v in self.variants())
        return [f"parity: models {', '.join(self.options.models)}; {names}; vs {mode}"]

    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """JUnit ``classname`` ``parity.<model>.<variant>``: stable, and free of the path
        parity is installed at (pytest derives it from the node id, which holds the path of
        ``pytest_suite.py``: a venv's site-packages when parity is installed)."""
        callspec = getattr(item, "callspec", None)
        case = callspec.params.get("parity_case") if callspec is not None else None
        if not isinstance(case, ParityCase):
            return
        from _pytest.junitxml import xml_key  # no public API sets a classname

        xml = item.config.stash.get(xml_key, None)
        if xml is not None:
            xml.node_reporter(item.nodeid).add_attribute(
                "classname", f"parity.{case.card}.{case.variant}"
            )

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """--parity-update-goldens: rewrite the goldens after collection, before any test."""
        config = session.config
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
                _torch_first()
                parity_session = self.session(model)
                moves = parity_session.golden_moves()
                buffer = io.StringIO()
                console = Console(file=buffer, width=width, color_system=None, highlight=False)
                print_golden_moves(parity_session.card.name, moves, console)
                parity_session.write_goldens()
                self.rewritten.add(model)
            except ParityError as exc:
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
        from parity.result import VariantResult

        session = self.sessions[model]
        results: list[VariantResult] = []
        for variant in self.ran[model]:
            error = self.errors.get((model, variant.name))
            if error is not None:
                results.append(VariantResult(variant, None, None, 0.0, error, "golden"))
                if self.options.live and not variant.reference:
                    results.append(VariantResult(variant, None, None, 0.0, error, "live"))
                continue
            try:
                results.append(session.check_golden(variant))
            except ParityError as exc:  # stale or missing goldens
                results.append(VariantResult(variant, None, None, 0.0, str(exc), "golden"))
            if self.options.live and not variant.reference:
                results.append(session.check(variant))
        return session.report(results, started=self.started[model])

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.written or self.report_errors:
            terminalreporter.write_sep("-", "parity report")
            for path in self.written:
                terminalreporter.write_line(f"parity report: {path}")
            for line in self.report_errors:
                terminalreporter.write_line(line, red=True)


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return format(value, spec)


def tap_table_lines(verdict: VariantVerdict) -> list[str]:
    """The per-tap table as plain text: metric / budget, SQNR, status, ``<- first``."""
    first = verdict.first_failure
    header = ("tap", "max_abs_norm / budget", "1-cosine / budget", "SQNR dB / min", "status")
    rows = [header]
    for tap in verdict.taps:
        m, limits = tap.metrics, tap.budget.limits

        def pair(value: str, limit: float | None, spec: str) -> str:
            return value if limit is None else f"{value} / {format(limit, spec)}"

        cos_limit = limits.get("min_cosine")
        status = "ok" if tap.passed else "FAIL"
        if tap is first:
            status += " <- first"
        if not tap.passed:
            status += f": {'; '.join(tap.failures)}"
        rows.append(
            (
                tap.tap.name,
                pair(_fmt(m.max_abs_norm, ".2e"), limits.get("max_abs_norm"), ".0e"),
                pair(
                    _fmt(max(0.0, 1.0 - m.cosine), ".1e"),
                    None if cos_limit is None else 1.0 - cos_limit,
                    ".0e",
                ),
                pair(_fmt(m.sqnr_db, ".1f"), limits.get("min_sqnr_db"), ".1f"),
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(
            [row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in (1, 2, 3)), row[4]]
        ).rstrip()
        for row in rows
    ]


def rejudged(verdict: VariantVerdict, *, rates: bool) -> VariantVerdict:
    """``verdict`` judged on the per-image budgets only (``rates=False``) or rates only.

    A rate budget below 1 (``min_top1_agreement = 0.1875``: 3 of 16 images) says nothing
    about one image, so per-image tests leave it to the whole-set test. A rate of 1 means
    every image, and per-image tests judge it exactly. The two together are the CLI gate.
    """
    from parity.compare import Budget, TapVerdict, VariantVerdict, judge

    taps = []
    for tap in verdict.taps:
        limits = {
            key: limit
            for key, limit in tap.budget.limits.items()
            if (key in RATE_KEYS and limit < 1.0) == rates
        }
        sources = {key: tap.budget.sources[key] for key in limits}
        budget = Budget(limits, sources)
        taps.append(TapVerdict(tap.tap, tap.metrics, budget, judge(tap.metrics, budget)))
    return VariantVerdict(verdict.variant, tuple(taps))


def image_verdict(session: Session, variant: Variant, index: int, mode: str) -> VariantVerdict:
    """One image's verdict on the per-image budgets (see :func:`rejudged`)."""
    return rejudged(session.image_verdict(variant, index, mode), rates=False)


def has_rate_budgets(session: Session, variant: Variant) -> bool:
    """Whether a variant has a budget that only the whole-set test can judge."""
    return any(
        key in RATE_KEYS and limit < 1.0
        for tap in session.taps
        for key, limit in session.policy.budget(
            session.card.name, variant.name, tap.name
        ).limits.items()
    )


def check_case(config: pytest.Config, case: ParityCase) -> None:
    """Run one generated test (called by :func:`parity.pytest_suite.test_parity`)."""
    _plugin(config).check(case)


# -- pytest hooks -------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    declared = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    from parity.backends import markers

    for name, description in {**PARITY_MARKER, **markers()}.items():
        if name not in declared:
            config.addinivalue_line("markers", f"{name}: {description}")
    plugin = ParityPlugin(config, ParityOptions.from_config(config))
    config.stash[_STATE] = plugin
    config.pluginmanager.register(plugin, "parity-session")
    if not plugin.options.models:
        return
    plugin.validate()
    if plugin.options.update_goldens and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError(
            "parity: --parity-update-goldens rewrites the goldens once, before any test; it "
            "cannot run under pytest-xdist (-n). Run it without -n, then the suite with -n"
        )
    if not config.option.collectonly:  # before user modules may import TensorFlow
        try:
            _torch_first()
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
    plugin = _plugin(metafunc.config)
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


# -- fixtures for users' own tests --------------------------------------------------


@pytest.fixture(scope="session")
def parity_session(pytestconfig: pytest.Config) -> Callable[[str], Session]:
    """Factory: ``parity_session("mobilenet_v2") -> Session``, one per model per run."""
    plugin = _plugin(pytestconfig)

    def session(model: str) -> Session:
        _torch_first()
        return plugin.session(model)

    return session


@pytest.fixture(scope="session")
def parity_check(pytestconfig: pytest.Config) -> Callable[[str, Any], VariantResult]:
    """``parity_check(model, variant) -> VariantResult``: one variant vs torch now."""
    plugin = _plugin(pytestconfig)

    def check(model: str, variant: str | Variant) -> VariantResult:
        from parity.variants import VARIANTS, Variant, resolve_variants

        if not isinstance(variant, Variant):
            if variant not in VARIANTS:
                resolve_variants([variant])  # the usual "unknown runtime" message
                raise ParityError(f"{variant!r} is a family; name one variant of it")
            variant = VARIANTS[variant]
        _torch_first()
        return plugin.session(model).check(variant)

    return check


@pytest.fixture(scope="session")
def parity_preprocess(pytestconfig: pytest.Config) -> Callable[..., np.ndarray]:
    """``parity_preprocess(path, model=None)``: the card's spec, as a (1, 3, H, W) batch."""
    models = _plugin(pytestconfig).options.models

    def preprocess(path: str | Path, model: str | None = None) -> np.ndarray:
        from parity.preprocess import preprocess_batch
        from parity.zoo import get_card

        card = get_card(model or (models[0] if models else _DEFAULT_MODEL))
        return preprocess_batch([Path(path)], card.preprocess.replace(layout="NCHW"))

    return preprocess


@pytest.fixture(scope="session")
def parity_doctor(
    parity_session: Callable[[str], Session],
) -> Callable[..., list[Any]]:
    """``parity_doctor(model, checks=None, **inputs)``: the doctor's findings.

    The same named checks as ``parity doctor`` (see :mod:`parity.doctor`), on the shared
    session of ``model`` (``inputs``: :class:`parity.doctor.DoctorInputs` fields, e.g.
    ``preprocess=``); assert on ``finding.status`` and read ``finding.cause``.
    """

    def doctor(model: str, checks: Sequence[str] | None = None, **options: Any) -> list[Any]:
        from parity.doctor import run_doctor

        return run_doctor(parity_session(model), checks, **options)

    return doctor


__all__ = [
    "ParityCase",
    "ParityOptions",
    "ParityPlugin",
    "check_case",
    "parity_check",
    "parity_doctor",
    "parity_preprocess",
    "parity_session",
    "tap_table_lines",
]
