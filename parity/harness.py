"""The live parity check: fixtures -> reference -> artifacts -> runners -> verdicts.

This is the one orchestration used by the CLI, the pytest plugin and the benchmark:
:func:`run_parity` over a :class:`~parity.session.Session` (the model under test and the
judging, :mod:`parity.session`), whose workers :mod:`parity.prefetch` runs. The names the
callers use are importable from here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parity.errors import ParityError
from parity.execute import make_runner
from parity.judge import EarlyVerdicts, Judging, judge
from parity.lazy import installed
from parity.readers import sniff_runtime
from parity.result import ParityReport
from parity.runconfig import Progress, RunConfig
from parity.session import Session
from parity.variants import REFERENCE, VARIANTS, resolve_variants
from parity.zoo import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "Progress", "RunConfig", "Session", "make_runner", "run_parity"]


def run_parity(
    config: RunConfig,
    progress: Progress = lambda message: None,
    modes: Sequence[str] = ("live",),
) -> ParityReport:
    """Check the requested variants of one model.

    ``modes``: ``"live"`` compares each variant with torch now; ``"golden"`` compares each
    variant, and torch itself, with the stored goldens (the regression gate).
    """
    start = time.perf_counter()
    variants = [v for v in resolve_variants(config.runtimes) if not v.reference]
    if config.artifact is not None and not config.runtimes:  # only the file made elsewhere
        variants = []
    artifact_options = config.tap_map or config.input_layout or config.artifact_runtime
    if config.artifact is None and artifact_options:
        raise ParityError("--tap-map, --input-layout and --artifact-runtime need --artifact")
    if not variants and "golden" not in modes and config.artifact is None:
        raise ParityError(
            "no runtime to compare against the torch reference; pick one with --runtime"
        )
    if "live" in modes and not installed("torch"):
        raise ParityError(
            "live checks compare with torch, which is not installed here; check against the "
            "goldens only (parity check --no-live) or install parity[torch]"
        )
    session = Session(config, progress)
    _ = session.batch  # bad fixtures fail before any export
    if "golden" in modes:
        _ = session.goldens  # a stale or missing golden fails before any export
    external: dict[str, Any] | None = None
    if config.artifact is not None:
        runtime, _what = sniff_runtime(Path(config.artifact), config.artifact_runtime)
        tap_map = str(config.tap_map) if config.tap_map is not None else None
        external = {"path": str(config.artifact), "runtime": runtime}
        external.update(input_layout=config.input_layout, tap_map=tap_map)
        external.update(golden="golden" in modes)
    golden = "golden" in modes
    with_reference = golden and installed("torch") and (variants or config.artifact is None)
    reference = [VARIANTS[REFERENCE]] if with_reference else []
    # A warm run judges each variant as its worker finishes, while the others still run.
    warm = session.known_reference() is not None
    early = EarlyVerdicts(session) if "live" in modes and warm else None
    try:
        session.prefetch(variants, external, on_outputs=early.submit if early else None)
        verdicts = early.verdicts() if early else {}
        judging = Judging((*reference, *variants), "live" in modes, golden, verdicts=verdicts)
        results = list(judge(session, judging))
    finally:
        if early is not None:
            early.close()
        session.release()  # the CLI leaves by os._exit: no finalizer would run
    results += session.external
    if not results:
        raise ParityError(
            "nothing was checked: the runtimes given have no live or golden check here "
            "(is the runtime installed? did you mean --no-live with torch installed?)"
        )
    return session.report(results, started=start)
