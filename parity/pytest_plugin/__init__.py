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

Each variant runs once per pytest session on the whole fixture batch, in worker processes
(one per backend, as ``parity run`` runs them): at the first test that needs a model's
outputs, every collected variant of that model runs (under pytest-xdist, every collected
variant of the requested one's backend, since a worker does not know its share in
advance). The pytest process imports no framework; a runtime that crashes fails its own
tests with the worker's message (``LiteRT worker crashed (SIGKILL) while loading
model.tflite``) while the others run. One :class:`~parity.harness.Session` per model is
shared with the ``parity_session`` fixture; each test only judges its own image. By
default a test compares its image with the stored goldens (the regression gate; the torch
test checks the reference itself); ``--parity-live`` also compares every runtime with
torch now.

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
arrays were written (in the cache, never among the goldens), and what to do: the command
that accepts the change if the torch reference moved on purpose, or the budget to widen
if only the runtime moved. A stale or missing golden fails each test of the model with its message.

Import order
------------
torch and torchvision must be imported before TensorFlow in one process. The generated
tests, ``parity_session`` and ``parity_check`` run every framework in workers, so the
order matters only where torch runs in the pytest process: ``--parity-update-goldens``
(which imports torch at configure time) and ``parity_doctor``. If your own test modules
import TensorFlow at import time and use ``parity_doctor``, import torch first in your
``conftest.py`` (``import parity.lazy; parity.lazy.torch()``); the fixture refuses to
start torch after TensorFlow instead of crashing the interpreter.

Layout
------
pytest registers the hooks and fixtures this package imports: :mod:`.options` (the
``--parity-*`` options), :mod:`.collect` (the generated tests), :mod:`.checks` (one test's
verdict, message and advice), :mod:`.state` (per-session state and the session hooks:
update-goldens, reports, xdist), :mod:`.verdicts` (per-image judging, the tap table),
:mod:`.fixtures`.
"""

from __future__ import annotations

from parity.pytest_plugin.collect import (
    check_case,
    pytest_configure,
    pytest_generate_tests,
    pytest_pycollect_makemodule,
)
from parity.pytest_plugin.fixtures import (
    parity_check,
    parity_doctor,
    parity_preprocess,
    parity_session,
)
from parity.pytest_plugin.options import ParityCase, ParityOptions, pytest_addoption
from parity.pytest_plugin.state import ParityPlugin
from parity.pytest_plugin.verdicts import tap_table_lines

__all__ = [
    "ParityCase",
    "ParityOptions",
    "ParityPlugin",
    "check_case",
    "parity_check",
    "parity_doctor",
    "parity_preprocess",
    "parity_session",
    "pytest_addoption",
    "pytest_configure",
    "pytest_generate_tests",
    "pytest_pycollect_makemodule",
    "tap_table_lines",
]
