"""Render a gate run (the dict of :func:`parity.report.gate_to_dict`) for people and CI.

Three views of the same dict, standard library only (no numpy, no template engine, no
JavaScript, no network assets):

* :func:`render_markdown`: a pull-request comment (verdict, one table per model, per-tap
  tables of the failing checks in ``<details>``), kept under GitHub's comment limit;
* :func:`render_junit`: JUnit XML, one testsuite per model, one testcase per check;
* :func:`render_html`: one self-contained page with a per-layer error plot (inline SVG)
  and the per-tap table of every check.

A *check* is one variant in one mode: ``ort_dynamo vs torch`` (live) or
``ort_dynamo vs golden`` (regression). The renderers only read the dict, so they work on
a ``report.json`` written by an earlier run as well.
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["MARKDOWN_LIMIT", "render_html", "render_junit", "render_markdown"]

#: Size budget of the Markdown summary in UTF-8 bytes: GitHub refuses comments over
#: 65,536 characters; bytes are a safe upper bound on characters, minus a margin.
MARKDOWN_LIMIT = 60_000

# Metric -> the budget key that limits it: mirrors parity.compare.BUDGET_KEYS, which this
# module does not import (it must stay importable without numpy).
_BUDGET_OF = {
    "max_abs_norm": "max_abs_norm",
    "max_rel": "max_rel",
    "cosine": "min_cosine",
    "sqnr_db": "min_sqnr_db",
    "top1_agreement": "min_top1_agreement",
    "top5_overlap": "min_top5_overlap",
}

# Float64 cosine cannot resolve 1 - cosine below about 1e-16: the plot's floor for it.
_COSINE_FLOOR_EXP = -16
# At most this many decades on a log axis; smaller values are drawn at the floor.
_MAX_DECADES = 14


# --------------------------------------------------------------------------------------
# The dict, normalised: one _Check per variant+mode, one _Tap per tap.


@dataclasses.dataclass(frozen=True)
class _Tap:
    index: int
    name: str
    where: str
    passed: bool
    failing: frozenset[str]  # metric names that break their budget ("max_abs_norm", ...)
    reasons: tuple[str, ...]  # one readable phrase per broken budget
    max_abs_norm: float | None
    budget_abs: float | None
    one_minus_cos: float | None
    budget_cos: float | None  # as a 1 - cosine limit
    sqnr_db: float | None
    top1: float | None
    top5: float | None
    worst_image: str
    sources: Mapping[str, str]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "within budget"


@dataclasses.dataclass(frozen=True)
class _Check:
    model: str
    variant: str
    family: str
    mode: str
    passed: bool
    error: str | None
    seconds: float | None
    explanation: str
    taps: tuple[_Tap, ...]
    first: _Tap | None
    artifact: Mapping[str, Any] | None

    @property
    def vs(self) -> str:
        return "torch" if self.mode == "live" else "golden"

    @property
    def label(self) -> str:
        return f"{self.variant} vs {self.vs}"

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "pass" if self.passed else "fail"

    @property
    def n_failing(self) -> int:
        return sum(not t.passed for t in self.taps)

    @property
    def unmatched(self) -> list[tuple[str, str]]:
        """(tap, reason) of the taps a foreign artifact did not yield: not in the verdict."""
        matching = (self.artifact or {}).get("tap_matching") or ()
        return [
            (str(m.get("tap")), _one_line(str(m.get("evidence", "")), 200))
            for m in matching
            if isinstance(m, Mapping) and m.get("how") == "unmatched"
        ]

    def unmatched_lines(self) -> list[str]:
        """One line per unmatched tap, for every report format."""
        return [
            f"tap '{tap}' unmatched, left out of the verdict: {why}" for tap, why in self.unmatched
        ]

    @property
    def worst(self) -> float | None:
        values = [t.max_abs_norm for t in self.taps if t.max_abs_norm is not None]
        if not values:
            return None
        bad = [v for v in values if not math.isfinite(v)]
        return bad[0] if bad else max(values)


def _num(value: Any) -> float | None:
    """A number from the JSON (``"inf"``/``"nan"`` strings included), else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _failed_metric(failure: str) -> str:
    """The metric a verdict's failure line is about (``judge`` writes cosine as 1-cosine)."""
    token = failure.split(" ", 1)[0]
    return "cosine" if token == "1-cosine" else token


def _reason(failure: str, metrics: Mapping[str, Any], budget: Mapping[str, Any]) -> str:
    """A readable phrase for one broken budget, from the numbers rather than the string
    (``judge`` prints cosine with 3 digits: '1 < 1'); the string is the fallback."""
    metric = _failed_metric(failure)
    value, limit = _num(metrics.get(metric)), _num(budget.get(_BUDGET_OF.get(metric, "")))
    if value is None or limit is None:
        return failure
    if metric == "cosine":
        return f"1-cosine {_sci(1.0 - value)} > {_lim(1.0 - limit)}"
    if metric == "sqnr_db":
        return f"SQNR {_fixed(value, '.1f')} dB < {limit:g} dB"
    if metric in ("top1_agreement", "top5_overlap"):
        return f"{'top-1' if metric == 'top1_agreement' else 'top-5'} {value:.2f} < {limit:g}"
    return f"{metric} {_sci(value)} > {_lim(limit)}"


def _tap(index: int, data: Mapping[str, Any]) -> _Tap:
    metrics: Mapping[str, Any] = data.get("metrics") or {}
    budget: Mapping[str, Any] = data.get("budget") or {}
    failures = [str(f) for f in data.get("failures") or ()]
    cosine = _num(metrics.get("cosine"))
    min_cosine = _num(budget.get("min_cosine"))
    module = str(data.get("module") or "<root>")
    return _Tap(
        index=index,
        name=str(data.get("name", f"#{index}")),
        where=f"{data.get('point', 'output')} of {module}",
        passed=bool(data.get("passed", not failures)),
        failing=frozenset(_failed_metric(f) for f in failures),
        reasons=tuple(_reason(f, metrics, budget) for f in failures),
        max_abs_norm=_num(metrics.get("max_abs_norm")),
        budget_abs=_num(budget.get("max_abs_norm")),
        one_minus_cos=None if cosine is None else max(0.0, 1.0 - cosine),
        budget_cos=None if min_cosine is None else 1.0 - min_cosine,
        sqnr_db=_num(metrics.get("sqnr_db")),
        top1=_num(metrics.get("top1_agreement")),
        top5=_num(metrics.get("top5_overlap")),
        worst_image=str(data.get("worst_image_name", metrics.get("worst_image", ""))),
        sources={str(k): str(v) for k, v in (data.get("budget_sources") or {}).items()},
    )


def _not_applicable(model: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(variant, vs, reason) of the variants that did not apply (``n/a`` rows, not checks)."""
    return [
        (str(e.get("name", "?")), "torch" if e.get("mode", "live") == "live" else "golden",
         str(e.get("reason") or ""))
        for e in model.get("variants") or ()
        if e.get("status") == "n/a"
    ]  # fmt: skip


def _checks(model: Mapping[str, Any]) -> list[_Check]:
    checks = []
    for entry in model.get("variants") or ():
        if entry.get("status") == "n/a":
            continue
        taps = tuple(_tap(i, t) for i, t in enumerate(entry.get("taps") or ()))
        named = entry.get("first_divergent_tap")
        first = next((t for t in taps if t.name == named), None) if named is not None else None
        if first is None:
            first = next((t for t in taps if not t.passed), None)
        error = entry.get("error")
        checks.append(
            _Check(
                model=str(model.get("model", "?")),
                variant=str(entry.get("name", "?")),
                family=str(entry.get("family", "")),
                mode=str(entry.get("mode", "live")),
                passed=bool(entry.get("passed")) and error is None,
                error=None if error is None else str(error),
                seconds=_num(entry.get("seconds")),
                explanation=str(entry.get("explanation") or ""),
                taps=taps,
                first=first,
                artifact=entry.get("artifact"),
            )
        )
    return checks


def _models(
    gate: Mapping[str, Any], problems_first: bool = False
) -> list[tuple[Mapping[str, Any], list[_Check]]]:
    """Each model with its checks: in run order, or errors, then failures, then passes
    (run order within each) for the views a person reads top-down."""
    models = [(m, _checks(m)) for m in gate.get("models") or ()]
    if problems_first:
        rank = {"error": 0, "fail": 1, "pass": 2}
        models = [(m, sorted(cs, key=lambda c: rank[c.status])) for m, cs in models]
    return models


def _counts(checks: Iterable[_Check]) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "error": 0}
    for check in checks:
        counts[check.status] += 1
    return counts


def _gate_passed(gate: Mapping[str, Any], models: Sequence[tuple[Any, list[_Check]]]) -> bool:
    return bool(gate.get("passed", True)) and all(c.passed for _, cs in models for c in cs)


def _tally(counts: Mapping[str, int]) -> str:
    """``9 of 12 checks failed, 1 errored`` / ``12 checks passed``."""
    total = sum(counts.values())
    if counts["fail"] == 0 and counts["error"] == 0:
        return f"{total} check{'s' if total != 1 else ''} passed"
    parts = []
    if counts["fail"]:
        parts.append(f"{counts['fail']} of {total} checks failed")
    if counts["error"]:
        parts.append(
            f"{counts['error']} of {total} errored" if not parts else f"{counts['error']} errored"
        )
    return ", ".join(parts)


# --------------------------------------------------------------------------------------
# Number formatting.


def _sci(value: float | None, digits: int = 2) -> str:
    """``1.56e-06``; ``0`` for zero; ``inf``/``nan``; ``-`` for no value."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return format(value, f".{digits}e")


def _lim(value: float | None) -> str:
    """A budget, with no trailing zeros: ``1e-06``, ``2.5e-06``."""
    text = _sci(value, 3)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def _fixed(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _topk(tap: _Tap) -> str:
    if tap.top1 is None and tap.top5 is None:
        return ""
    return f"{_fixed(tap.top1, '.2f')} / {_fixed(tap.top5, '.2f')}"


def _short(sha: Any, n: int = 12) -> str:
    return str(sha or "-")[:n]


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _artifact_line(artifact: Mapping[str, Any] | None, sha: bool = True) -> str:
    if not artifact:
        return ""
    size = _num(artifact.get("bytes"))
    parts = [str(artifact.get("exporter_name") or artifact.get("exporter") or "")]
    if size is not None:
        parts.append(f"{size / 1e6:.1f} MB")
    if sha and artifact.get("sha256"):
        parts.append(f"sha256 {_short(artifact['sha256'])}")
    return ", ".join(p for p in parts if p)


def _preprocess_line(spec: Mapping[str, Any]) -> str:
    """``resize 256 bilinear aa, crop 224x224, mean/std, RGB NCHW float32``."""
    if not spec:
        return ""

    def dims(value: Any) -> str:
        return "none" if not value else "x".join(str(v) for v in value)

    std = spec.get("std") or [1.0]
    norm = "mean/std" if not math.isclose(float(std[0]), 1.0) else "no norm"
    aa = "aa" if spec.get("antialias") else "no-aa"
    return (
        f"resize {dims(spec.get('resize'))} {spec.get('resize_filter', '')} {aa}, "
        f"crop {dims(spec.get('crop'))}, {norm}, {spec.get('channel_order', '')} "
        f"{spec.get('layout', '')} {spec.get('dtype', '')}"
    )


# --------------------------------------------------------------------------------------
# Markdown.

# Markdown syntax in a cell: backslash, code, emphasis (an underscore only at a word edge:
# GFM never reads intraword ones, so `max_abs_norm` stays readable), links, pipes.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|#~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")


def _md(text: Any) -> str:
    """Text for a Markdown table cell: one line, HTML and Markdown syntax neutralised."""
    escaped = html.escape(" ".join(_xml(text).split()), quote=False).replace("&gt;", ">")
    escaped = _MD_SPECIAL.sub(r"\\\1", escaped)
    return "\\" + escaped if escaped.startswith((">", "-", "+")) else escaped


def _md_code(text: Any) -> str:
    """Monospace that survives any tap name, also inside a table cell."""
    return f"<code>{_md(text)}</code>"


_MD_ICON = {"pass": "✅", "fail": "❌", "error": "💥"}


def _md_summary(model: Mapping[str, Any], checks: Sequence[_Check]) -> str:
    counts = _counts(checks)
    icon = "✅" if all(c.passed for c in checks) and model.get("passed", True) else "❌"
    lines = [
        f"### {icon} {_md_code(model.get('model', '?'))}: {_tally(counts)}",
        "",
        "| variant | vs | verdict | first divergent tap | worst max_abs_norm | time |",
        "|---|---|---|---|--:|--:|",
    ]
    for c in checks:
        verdict = {"pass": "✅ pass", "fail": "❌ **FAIL**", "error": "💥 **ERROR**"}[c.status]
        if c.error is not None:
            where = _md(_one_line(c.error, 200))
        elif c.first is not None:
            where = f"{_md_code(c.first.name)}: {_md(c.first.reason)}"
        else:
            where = "–"
        lines.append(
            f"| {_md(c.variant)} | {c.vs} | {verdict} | {where} | {_sci(c.worst)} "
            f"| {_seconds(c.seconds)} |"
        )
    for variant, vs, reason in _not_applicable(model):
        lines.append(f"| {_md(variant)} | {vs} | ➖ n/a | {_md(reason)} | – | – |")
    return "\n".join(lines)


def _md_provenance(gate: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    weights = model.get("weights") or {}
    preprocess = model.get("preprocess") or {}
    images = model.get("images") or ()
    version = model.get("parity_version") or gate.get("parity_version", "?")
    return (
        f"<sub>weights {_md_code(_short(weights.get('sha256')))}"
        f" ({_md(weights.get('source', '?'))})"
        f" · preprocess {_md_code(_short(preprocess.get('sha256')))}"
        f" · input {_md_code(_short(model.get('input_sha256')))} ({len(images)} images)"
        f" · tolerances {_md_code(model.get('tolerances', '?'))}"
        f" · config {_md_code(model.get('config') or '?')}"
        + (
            " · **default budgets (none measured for this model)**"
            if model.get("measured_budgets") is False
            else ""
        )
        + f" · parity {_md(version)}</sub>"
    )


def _md_unmatched(checks: Sequence[_Check]) -> str:
    lines = [f"- ⚠️ {_md(c.label)}: {_md(line)}" for c in checks for line in c.unmatched_lines()]
    return "\n\n" + "\n".join(lines) if lines else ""


def _md_details(check: _Check, compact: bool = False) -> str:
    """A failing check's ``<details>``: explanation and per-tap table (failing taps only if
    ``compact``)."""
    if check.error is not None:
        text = _xml(check.error).strip()
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", text)), default=0))
        return "\n".join(
            [
                "<details>",
                f"<summary>💥 <b>{_md(check.label)}</b>: runtime error</summary>",
                "",
                fence,
                text if len(text) < 4000 else text[:4000] + "\n…",
                fence,
                "",
                "</details>",
            ]
        )
    failing = check.n_failing
    first = check.first
    lines = [
        "<details>",
        f"<summary>❌ <b>{_md(check.label)}</b>: first divergent tap "
        f"{_md_code(first.name if first else '-')} ({failing} of {len(check.taps)} taps over "
        "budget)</summary>",
        "",
    ]
    if check.explanation:
        lines += [_md(check.explanation), ""]
    lines += [
        "| tap | max_abs_norm / budget | 1-cosine / budget | SQNR dB | top-1 / top-5 "
        "| worst image | |",
        "|---|--:|--:|--:|--:|---|---|",
    ]
    shown = [t for t in check.taps if not t.passed] if compact else list(check.taps)
    for t in shown:
        abs_cell = (
            f"{_sci(t.max_abs_norm)} / {_lim(t.budget_abs)}"
            if t.budget_abs
            else _sci(t.max_abs_norm)
        )
        cos_cell = (
            f"{_sci(t.one_minus_cos)} / {_lim(t.budget_cos)}"
            if t.budget_cos
            else _sci(t.one_minus_cos)
        )
        if "max_abs_norm" in t.failing:
            abs_cell = f"**{abs_cell}**"
        if "cosine" in t.failing:
            cos_cell = f"**{cos_cell}**"
        topk = _topk(t)
        if t.failing & {"top1_agreement", "top5_overlap"}:
            topk = f"**{topk}**"
        sqnr = _fixed(t.sqnr_db, ".1f").replace("inf", "∞")
        if "sqnr_db" in t.failing:
            sqnr = f"**{sqnr}**"
        status = "✅" if t.passed else "❌"
        if t is first:
            status += " ← first"
        name = f"**{_md_code(t.name)}**" if t is first else _md_code(t.name)
        lines.append(
            f"| {name} | {abs_cell} | {cos_cell} | {sqnr} | {topk} | {_md(t.worst_image)} "
            f"| {status} |"
        )
    if compact and len(shown) < len(check.taps):
        lines += ["", f"<sub>{len(check.taps) - len(shown)} passing taps not shown.</sub>"]
    lines += ["", "</details>"]
    return "\n".join(lines)


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def render_markdown(gate: Mapping[str, Any], max_bytes: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment: verdict, one table per model, per-tap tables of failures.

    The per-tap ``<details>`` come last in priority: when the whole would exceed
    ``max_bytes`` they shrink to their failing taps, then are left out with a note; the
    verdict and the summary tables are always kept (cut with a note only if they alone
    are too long).
    """
    models = _models(gate, problems_first=True)
    checks = [c for _, cs in models for c in cs]
    passed = _gate_passed(gate, models)
    counts = _counts(checks)
    version = gate.get("parity_version", "?")
    n_models = len(models)
    head = [
        f"## {'✅ Parity gate passed' if passed else '❌ Parity gate failed'}",
        "",
        f"**{_tally(counts)}** across {n_models} model{'s' if n_models != 1 else ''}. "
        "Each check compares a runtime variant with torch (*vs torch*) or with the "
        "stored goldens (*vs golden*), tap by tap in forward order.",
    ]
    footer = f"<sub>parity {_md(version)} · {_md(gate.get('created', ''))}</sub>"
    note_reserve = 400  # room for the truncation notes

    # Essentials (always shown) and optional details, in display order.
    essentials = [
        _md_summary(m, cs) + _md_unmatched(cs) + "\n\n" + _md_provenance(gate, m)
        for m, cs in models
    ]
    fixed = _size("\n".join(head)) + _size(footer) + sum(_size(e) + 4 for e in essentials)
    room = max_bytes - fixed - note_reserve
    failing = [[c for c in cs if not c.passed] for _, cs in models]
    full = [[_md_details(c) for c in cs] for cs in failing]
    compact = [[_md_details(c, compact=True) for c in cs] for cs in failing]

    def total(blocks: list[list[str]]) -> int:
        return sum(_size(b) + 2 for bs in blocks for b in bs)

    omitted = shortened = 0
    if total(full) <= room:  # everything fits
        blocks = full
    elif total(compact) <= room:  # every failing check, failing taps only
        blocks = compact
        shortened = sum(len(bs) for bs in compact)
    else:  # in order, each as long as still fits, until none does
        blocks = []
        for long_blocks, short_blocks in zip(full, compact, strict=True):
            chosen = []
            for long, short in zip(long_blocks, short_blocks, strict=True):
                text = next((t for t in (long, short) if _size(t) + 2 <= room), None)
                if text is None:
                    omitted += 1
                    continue
                chosen.append(text)
                room -= _size(text) + 2
                shortened += text is short
            blocks.append(chosen)

    parts = ["\n".join(head)]
    for essential, chosen in zip(essentials, blocks, strict=True):
        parts.append(essential)
        parts.extend(chosen)
    notes = []
    if shortened:
        notes.append(f"{shortened} per-tap table(s) show failing taps only")
    if omitted:
        notes.append(f"{omitted} per-tap table(s) left out")
    if notes:
        parts.append(
            f"> [!NOTE]\n> Shortened to fit a GitHub comment: {'; '.join(notes)}. "
            "The full per-tap data is in the HTML and JSON reports."
        )
    parts.append(footer)
    text = "\n\n".join(parts) + "\n"
    if _size(text) > max_bytes:  # the summary tables alone are too long: cut by lines
        note = (
            "\n\n> [!NOTE]\n> Cut to fit a GitHub comment; "
            "see the HTML and JSON reports for the rest.\n"
        )
        kept: list[str] = []
        used = _size(note)
        for line in text.splitlines():
            if used + _size(line) + 1 > max_bytes:
                break
            kept.append(line)
            used += _size(line) + 1
        text = "\n".join(kept) + note
    return text


# --------------------------------------------------------------------------------------
# JUnit XML.

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: Any) -> str:
    """Text XML 1.0 can carry (ElementTree escapes markup but not control characters)."""
    return _XML_ILLEGAL.sub("?", str(text))


def _tap_lines(check: _Check) -> str:
    """The per-tap table as fixed-width text, for a JUnit failure body."""
    header = ("tap", "max_abs_norm", "budget", "1-cosine", "budget", "SQNR dB", "top-1/5",
              "worst image", "status")  # fmt: skip
    rows = [header]
    for t in check.taps:
        status = "ok" if t.passed else "FAIL"
        if t is check.first:
            status += " <- first"

        def mark(text: str, *metrics: str, tap: _Tap = t) -> str:
            return text + ("*" if tap.failing & set(metrics) else "")

        rows.append(
            (
                t.name,
                mark(_sci(t.max_abs_norm), "max_abs_norm"),
                _lim(t.budget_abs),
                mark(_sci(t.one_minus_cos), "cosine"),
                _lim(t.budget_cos),
                mark(_fixed(t.sqnr_db, ".1f"), "sqnr_db"),
                mark(_topk(t).replace(" ", "") or "-", "top1_agreement", "top5_overlap"),
                t.worst_image,
                status,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    failing = [t for t in check.taps if not t.passed]
    detail = [f"  {t.name}: {t.reason}" for t in failing]
    return "\n".join(
        [check.explanation, "", *lines, "* over budget", "",
         f"{len(failing)} tap(s) over budget:", *detail]
    )  # fmt: skip


def render_junit(gate: Mapping[str, Any]) -> str:
    """JUnit XML: one testsuite per model, one testcase per variant and mode."""
    models = _models(gate)
    created = str(gate.get("created", ""))
    root = ET.Element("testsuites", name="parity")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_seconds = 0.0
    for model, checks in models:
        name = str(model.get("model", "?"))
        counts = _counts(checks)
        seconds = sum(c.seconds or 0.0 for c in checks)
        skipped = _not_applicable(model)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=_xml(f"parity.{name}"),
            tests=str(len(checks) + len(skipped)),
            failures=str(counts["fail"]),
            errors=str(counts["error"]),
            skipped=str(len(skipped)),
            time=f"{seconds:.3f}",
        )
        if created:
            suite.set("timestamp", _xml(created))
        properties = ET.SubElement(suite, "properties")
        weights = model.get("weights") or {}
        preprocess = model.get("preprocess") or {}
        for key, value in (
            ("parity_version", model.get("parity_version") or gate.get("parity_version")),
            ("weights_source", weights.get("source")),
            ("weights_sha256", weights.get("sha256")),
            ("preprocess_sha256", preprocess.get("sha256")),
            ("input_sha256", model.get("input_sha256")),
            ("tolerances", model.get("tolerances")),
            ("config", model.get("config")),
        ):
            if value is not None:
                ET.SubElement(properties, "property", name=key, value=_xml(value))
        for check in checks:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=_xml(f"parity.{name}"),
                name=_xml(check.label),
                time=f"{check.seconds or 0.0:.3f}",
            )
            if check.error is not None:
                error = ET.SubElement(
                    case, "error", message=_xml(_one_line(check.error)), type="RuntimeError"
                )
                error.text = _xml(check.error)
            elif not check.passed:
                first = check.first
                message = (
                    f"first divergent tap '{first.name}': {first.reason}"
                    if first is not None
                    else "check failed"
                )
                failure = ET.SubElement(
                    case, "failure", message=_xml(message), type="ToleranceFailure"
                )
                failure.text = _xml(_tap_lines(check))
            artifact = _artifact_line(check.artifact)
            out = ([f"artifact: {artifact}"] if artifact else []) + check.unmatched_lines()
            if out:
                ET.SubElement(case, "system-out").text = _xml("\n".join(out))
        for variant, vs, reason in skipped:
            case = ET.SubElement(
                suite, "testcase", classname=_xml(f"parity.{name}"),
                name=_xml(f"{variant} vs {vs}"), time="0.000",
            )  # fmt: skip
            ET.SubElement(case, "skipped", message=_xml(f"n/a: {reason}"))
        totals["tests"] += len(checks) + len(skipped)
        totals["failures"] += counts["fail"]
        totals["errors"] += counts["error"]
        total_seconds += seconds
    for key in ("tests", "failures", "errors"):
        root.set(key, str(totals[key]))
    root.set("time", f"{total_seconds:.3f}")
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    # ASCII with character references: valid whatever encoding the file is written in.
    body = body.encode("ascii", "xmlcharrefreplace").decode("ascii")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


# --------------------------------------------------------------------------------------
# HTML: the per-layer error plot (inline SVG).


def _e(text: Any) -> str:
    """Escaped for HTML text and attributes, control characters dropped."""
    return html.escape(_xml(text), quote=True)


def _f(value: float) -> str:
    """A coordinate."""
    return f"{value:.1f}"


@dataclasses.dataclass(frozen=True)
class _Series:
    title: str
    metric: str  # failure key: "max_abs_norm" or "cosine"
    short: str
    values: list[float | None]
    budgets: list[float | None]
    floor_exp: int | None = None  # a fixed lower limit of the axis (as a power of 10)


def _decades(series: _Series) -> tuple[int, int]:
    """The log axis range [10^lo, 10^hi] covering the finite positive values and budgets."""
    seen = [v for v in (*series.values, *series.budgets) if v is not None]
    positive = [v for v in seen if v > 0 and math.isfinite(v)]
    if not positive:
        lo, hi = -9, -3
    else:
        lo = math.floor(math.log10(min(positive)) + 1e-9)
        hi = math.ceil(math.log10(max(positive)) - 1e-9)
        if hi <= math.log10(max(positive)) + 0.15:  # keep points off the top edge
            hi += 1
    if any(v == 0 for v in seen):
        lo -= 1  # leave a decade for the zeros drawn at the floor
    if series.floor_exp is not None:
        lo = max(lo, series.floor_exp)
        hi = max(hi, lo + 1)
    lo = max(lo, hi - _MAX_DECADES)
    if hi - lo < 2:
        lo = hi - 2
    return lo, hi


def _pow10(exp: int) -> str:
    """10^exp as SVG text (superscript by a tspan)."""
    sign = "−" if exp < 0 else ""
    return f'10<tspan dy="-6" font-size="9">{sign}{abs(exp)}</tspan>'


def _panel(
    out: list[str],
    series: _Series,
    taps: Sequence[_Tap],
    xs: Sequence[float],
    pitch: float,
    x0: float,
    x1: float,
    top: float,
    height: float,
    first: _Tap | None,
) -> None:
    """One log-scale panel: grid, over-budget zone, budget steps, values, markers."""
    lo, hi = _decades(series)
    bottom = top + height

    def y(value: float) -> float:
        return top + height * (hi - math.log10(value)) / (hi - lo)

    floor = 10.0**lo
    out.append(f'<text class="ptitle" x="{_f(x0)}" y="{_f(top - 9)}">{_e(series.title)}</text>')
    out.append(
        f'<rect x="{_f(x0)}" y="{_f(top)}" width="{_f(x1 - x0)}" height="{_f(height)}" '
        'fill="#ffffff" stroke="#d1d9e0"/>'
    )
    # Over-budget zone and budget steps, one run per stretch of taps that have a budget.
    runs: list[list[tuple[int, float]]] = []
    for i, budget in enumerate(series.budgets):
        if budget is None or budget <= 0 or not math.isfinite(budget):
            if runs and runs[-1]:
                runs.append([])
            continue
        if not runs:
            runs.append([])
        runs[-1].append((i, min(max(budget, floor), 10.0**hi)))
    steps = []
    for run in (r for r in runs if r):
        start = xs[run[0][0]] - pitch / 2
        zone = [f"M{_f(start)},{_f(top)}"]
        line = [f"M{_f(start)},{_f(y(run[0][1]))}"]
        for i, budget in run:
            zone.append(f"V{_f(y(budget))}H{_f(xs[i] + pitch / 2)}")
            line.append(f"V{_f(y(budget))}H{_f(xs[i] + pitch / 2)}")
        zone.append(f"V{_f(top)}Z")
        out.append(f'<path class="zone" d="{"".join(zone)}"/>')
        steps.append("".join(line))
    # Decade grid and labels.
    every = 1 if height / (hi - lo) >= 26 else 2
    for exp in range(lo, hi + 1):
        gy = y(10.0**exp)
        out.append(f'<line class="grid" x1="{_f(x0)}" x2="{_f(x1)}" y1="{_f(gy)}" y2="{_f(gy)}"/>')
        if (hi - exp) % every == 0:
            out.append(f'<text class="ylab" x="{_f(x0 - 6)}" y="{_f(gy + 4)}">{_pow10(exp)}</text>')
    if first is not None:
        fx = xs[first.index]
        out.append(
            f'<line class="firstline" x1="{_f(fx)}" x2="{_f(fx)}" y1="{_f(top)}" '
            f'y2="{_f(bottom)}"/>'
        )
    for d in steps:
        out.append(f'<path class="budget" d="{d}"><title>{_e(series.short)} budget</title></path>')
    if not steps:
        out.append(
            f'<text class="note" x="{_f(x1 - 6)}" y="{_f(top + 14)}" text-anchor="end">'
            f"no {_e(series.short)} budget</text>"
        )
    # The values: a thin line through all of them, then one marker per tap.
    points: list[tuple[float, float, str]] = []  # x, y, kind
    for i, value in enumerate(series.values):
        if value is None:
            continue
        if not math.isfinite(value):
            points.append((xs[i], top, "top"))
        elif value < floor:
            points.append((xs[i], bottom, "floor"))
        else:
            points.append((xs[i], y(value), "value"))
    if len(points) > 1:
        coords = " ".join(f"{_f(px)},{_f(py)}" for px, py, _ in points)
        out.append(f'<polyline class="trace" points="{coords}"/>')
    marker_of = {i: p for i, p in zip((i for i, v in enumerate(series.values) if v is not None),
                                      points, strict=True)}  # fmt: skip
    for i, (px, py, kind) in marker_of.items():
        tap = taps[i]
        value = series.values[i]
        over = series.metric in tap.failing
        budget = series.budgets[i]
        tip = (
            f"{tap.name}: {series.short} {_sci(value)}"
            f"{'' if budget is None else ' (budget ' + _lim(budget) + ')'}"
            f"{' - over budget' if over else ''}"
            f"{' - drawn at the axis floor' if kind == 'floor' else ''}"
        )
        cls = "m fail" if over else "m ok"
        title = f"<title>{_e(tip)}</title>"
        data = f'data-tap="{_e(tap.name)}" data-metric="{series.metric}"'
        if kind == "value":
            r = _f(min(5.5, max(2.5, pitch * 0.38)) if over else min(4.0, max(2.0, pitch * 0.3)))
            out.append(
                f'<circle class="{cls}" {data} cx="{_f(px)}" cy="{_f(py)}" r="{r}">{title}</circle>'
            )
        elif kind == "floor":  # zero (or below the axis): a hollow triangle on the floor
            pts = f"{_f(px - 5)},{_f(py - 9)} {_f(px + 5)},{_f(py - 9)} {_f(px)},{_f(py - 1)}"
            out.append(f'<polygon class="{cls} hollow" {data} points="{pts}">{title}</polygon>')
        else:  # inf or nan: a triangle pointing off the top
            pts = f"{_f(px - 6)},{_f(py + 10)} {_f(px + 6)},{_f(py + 10)} {_f(px)},{_f(py + 1)}"
            out.append(f'<polygon class="m fail" {data} points="{pts}">{title}</polygon>')
    # The first divergent tap of this metric, annotated.
    if first is not None and series.metric in first.failing:
        i = first.index
        value = series.values[i]
        if value is not None and i in marker_of:
            px, py, _ = marker_of[i]
            lines = [f"first divergent: {first.name}"]
            reason = next((r for r in first.reasons if r.startswith(series.short)), "")
            if reason:
                lines.append(reason)
            width = max(len(s) for s in lines) * 6.7 + 12
            box_h = 16.0 * len(lines) + 4

            def box(right: bool, ty: float) -> tuple[float, float]:
                return (px + 6 if right else px - 6 - width), ty - 13

            def covered(right: bool, ty: float) -> int:
                bx, by = box(right, ty)
                hits = sum(
                    bx - 6 <= qx <= bx + width + 6 and by - 6 <= qy <= by + box_h + 6
                    for qx, qy, _ in points
                )
                outside = bx < x0 or bx + width > x1
                return hits + 100 * outside

            # The callout goes where it hides the fewest points: top or bottom, right or left.
            prefer_right = px < x0 + (x1 - x0) * 0.6
            candidates = [
                (prefer_right, top + 18),
                (not prefer_right, top + 18),
                (prefer_right, bottom - box_h + 8),
                (not prefer_right, bottom - box_h + 8),
            ]
            right, ty = min(candidates, key=lambda c: covered(*c))
            tx = px + 12 if right else px - 12
            bx = box(right, ty)[0]
            out.append(
                f'<line class="lead" x1="{_f(px)}" y1="{_f(py)}" '
                f'x2="{_f(tx - (4 if right else -4))}" y2="{_f(ty + 6)}"/>'
            )
            out.append(
                f'<rect class="callout" x="{_f(bx)}" y="{_f(ty - 13)}" width="{_f(width)}" '
                f'height="{_f(box_h)}" rx="3"/>'
            )
            anchor = "start" if right else "end"
            for k, text in enumerate(lines):
                cls = "ann strong" if k == 0 else "ann"
                out.append(
                    f'<text class="{cls}" x="{_f(tx)}" y="{_f(ty + 16 * k)}" '
                    f'text-anchor="{anchor}">{_e(text)}</text>'
                )


def _plot(check: _Check, uid: str) -> str:
    """The per-layer error plot of one check: max_abs_norm and 1-cosine per tap."""
    taps = check.taps
    n = len(taps)
    width = 1000.0
    x0, x1 = 72.0, width - 24.0
    pitch = (x1 - x0) / n
    xs = [x0 + pitch * (i + 0.5) for i in range(n)]
    names = [t.name if len(t.name) <= 22 else t.name[:21] + "…" for t in taps]
    stride = max(1, math.ceil(18.0 / pitch))  # rotated 45 degrees: 13 px apart
    panels = [
        _Series(
            "max_abs_norm = max |runtime − reference| / max |reference|  (log scale)",
            "max_abs_norm",
            "max_abs_norm",
            [t.max_abs_norm for t in taps],
            [t.budget_abs for t in taps],
        ),
        _Series(
            "1 − cosine similarity  (log scale)",
            "cosine",
            "1-cosine",
            [t.one_minus_cos for t in taps],
            [t.budget_cos for t in taps],
            floor_exp=_COSINE_FLOOR_EXP,
        ),
    ]
    panels = [p for p in panels if any(v is not None for v in p.values)]
    legend_h, title_h, gap = 30.0, 22.0, 18.0
    heights = [240.0, 150.0][: len(panels)]
    label_room = 10.0 + 6.0 * max(len(s) for s in names) * 0.71
    height = legend_h + sum(title_h + h + gap for h in heights) - gap + label_room + 22
    failing = check.n_failing
    first = check.first
    desc = (
        f"Per-tap error of {check.label} in forward order, on a log scale, against the "
        f"budget (step line). {failing} of {n} taps over budget"
        + (f"; first divergent tap {first.name}: {first.reason}." if first else ".")
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {_f(width)} '
        f'{_f(height)}" width="{_f(width)}" height="{_f(height)}" role="img" '
        f'aria-labelledby="{uid}-t {uid}-d">',
        f'<title id="{uid}-t">Per-layer error: {_e(check.label)}</title>',
        f'<desc id="{uid}-d">{_e(desc)}</desc>',
    ]
    # Legend.
    lx, ly = x0, 16.0
    legend = [
        (f'<circle class="m ok" cx="{_f(lx + 5)}" cy="{_f(ly - 4)}" r="4"/>', "within budget"),
        (f'<circle class="m fail" cx="{_f(lx + 5)}" cy="{_f(ly - 4)}" r="5.5"/>', "over budget"),
        (
            f'<path class="budget" d="M{_f(lx - 2)},{_f(ly - 4)}H{_f(lx + 14)}"/>',
            "budget (per tap)",
        ),
        (
            f'<rect class="zone" x="{_f(lx - 2)}" y="{_f(ly - 11)}" width="16" height="14"/>',
            "over-budget zone",
        ),
        (
            f'<polygon class="m ok hollow" points="{_f(lx)},{_f(ly - 9)} {_f(lx + 10)},'
            f'{_f(ly - 9)} {_f(lx + 5)},{_f(ly - 1)}"/>',
            "0 or below the axis (drawn at the floor)",
        ),
    ]
    offset = 0.0
    for shape, text in legend:
        out.append(f'<g transform="translate({_f(offset)},0)">{shape}')
        out.append(f'<text class="leg" x="{_f(lx + 20)}" y="{_f(ly)}">{_e(text)}</text></g>')
        offset += 34 + len(text) * 6.6
    # Panels.
    top = legend_h + title_h
    panel_tops = []
    for series, h in zip(panels, heights, strict=True):
        panel_tops.append(top)
        _panel(out, series, taps, xs, pitch, x0, x1, top, h, first)
        top += h + gap + title_h
    plot_bottom = panel_tops[-1] + heights[-1] if panels else top
    # X axis: tick labels rotated, failing taps in red.
    for i, (tap, name) in enumerate(zip(taps, names, strict=True)):
        x = xs[i]
        out.append(
            f'<line class="tick" x1="{_f(x)}" x2="{_f(x)}" y1="{_f(plot_bottom)}" '
            f'y2="{_f(plot_bottom + 4)}"/>'
        )
        near_first = first is not None and 0 < abs(i - first.index) < stride
        if tap is not first and (i % stride or near_first):
            continue
        cls = "xlab" + ("" if tap.passed else " bad") + (" first" if tap is first else "")
        ty = plot_bottom + 12
        out.append(
            f'<text class="{cls}" x="{_f(x + 3)}" y="{_f(ty)}" '
            f'transform="rotate(-45 {_f(x + 3)} {_f(ty)})">{_e(name)}'
            f"<title>{_e(tap.name)} ({_e(tap.where)})</title></text>"
        )
    out.append(
        f'<text class="axis" x="{_f(x1)}" y="{_f(height - 6)}" text-anchor="end">'
        "taps in forward order →</text>"
    )
    out.append("</svg>")
    return "\n".join(out)


# --------------------------------------------------------------------------------------
# HTML: page, tables.

_CSS = """
:root { color-scheme: light; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --subtle: #f6f8fa; --red: #cf222e; --red-bg: #ffebe9; --green: #1a7f37;
  --green-bg: #dafbe1; --amber: #9a6700; --amber-bg: #fff8c5; --blue: #0969da; }
* { box-sizing: border-box; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
html { background: #fff; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans", "Liberation Sans",
  "DejaVu Sans", Arial, sans-serif; }
code, .mono, td.num { font-family: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas,
  "Liberation Mono", "DejaVu Sans Mono", monospace; font-size: 12.5px; }
.wrap { max-width: 1240px; margin: 0 auto; padding: 0 24px; }
header.verdict { border-bottom: 1px solid var(--line); padding: 20px 0 16px; }
header.verdict.pass { background: var(--green-bg); }
header.verdict.fail { background: var(--red-bg); }
header h1 { margin: 0 0 4px; font-size: 26px; }
header.pass h1 { color: var(--green); }
header.fail h1 { color: var(--red); }
header p { margin: 4px 0; }
.muted { color: var(--muted); }
h2 { margin: 32px 0 8px; font-size: 21px; border-bottom: 1px solid var(--line);
  padding-bottom: 6px; }
h3 { margin: 0 0 4px; font-size: 16px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin: 8px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left;
  vertical-align: top; }
th { background: var(--subtle); font-weight: 600; font-size: 12.5px; white-space: nowrap; }
td.num, th.num { text-align: right; white-space: nowrap; }
table.prov td:first-child { color: var(--muted); white-space: nowrap; }
table.prov td { border: 0; padding: 1px 14px 1px 0; }
table.prov code, td.status, .nowrap { white-space: nowrap; }
td.where { min-width: 320px; }
tr.row-fail td { background: #fff5f5; }
tr.row-first td { background: var(--amber-bg); }
.bad { color: var(--red); font-weight: 600; }
.badge { display: inline-block; padding: 0 9px; border-radius: 2em; font-size: 12px;
  font-weight: 700; letter-spacing: .03em; vertical-align: 2px; white-space: nowrap; }
.badge.pass { background: var(--green-bg); color: var(--green); border: 1px solid #aceebb; }
.badge.fail { background: var(--red-bg); color: var(--red); border: 1px solid #ffcecb; }
.badge.error { background: var(--red); color: #fff; }
article.check { border: 1px solid var(--line); border-radius: 6px; padding: 14px 18px 8px;
  margin: 16px 0; }
article.check.fail, article.check.error { border-left: 4px solid var(--red); }
article.check.pass { border-left: 4px solid var(--green); }
p.explain { margin: 2px 0 8px; }
figure { margin: 8px 0 0; }
figcaption { color: var(--muted); font-size: 12.5px; }
svg.plot { display: block; width: 100%; height: auto; }
svg.plot text { font-family: system-ui, -apple-system, "Segoe UI", "Liberation Sans",
  "DejaVu Sans", Arial, sans-serif; fill: var(--ink); }
svg .ptitle { font-size: 12.5px; font-weight: 600; }
svg .ylab { font-size: 11px; text-anchor: end; fill: var(--muted); }
svg .xlab { font-size: 11px; text-anchor: end; }
svg .xlab.bad { fill: var(--red); }
svg .xlab.first { font-weight: 700; }
svg .leg, svg .note, svg .axis { font-size: 11.5px; fill: var(--muted); }
svg .grid { stroke: #eaeef2; stroke-width: 1; }
svg .tick { stroke: #8c959f; }
svg .zone { fill: #ffebe9; stroke: none; }
svg .budget { fill: none; stroke: #9a6700; stroke-width: 2; stroke-dasharray: 7 3; }
svg .trace { fill: none; stroke: #8c959f; stroke-width: 1.4; }
svg .m.ok { fill: #0969da; stroke: #fff; stroke-width: 1; }
svg .m.fail { fill: #cf222e; stroke: #fff; stroke-width: 1.2; }
svg .m.hollow { fill: #fff; stroke-width: 1.6; }
svg .m.ok.hollow { stroke: #0969da; }
svg .m.fail.hollow { stroke: #cf222e; }
svg .firstline { stroke: #cf222e; stroke-width: 1.2; stroke-dasharray: 3 3; opacity: .7; }
svg .lead { stroke: #cf222e; stroke-width: 1; }
svg .callout { fill: #fff; fill-opacity: .92; stroke: #ffcecb; }
svg .ann { font-size: 11.5px; fill: var(--red); }
svg .ann.strong { font-weight: 700; }
details { margin: 6px 0 8px; }
summary { cursor: pointer; color: var(--blue); font-weight: 600; }
pre.error { background: var(--red-bg); border: 1px solid #ffcecb; padding: 10px;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.scroll { overflow-x: auto; }
footer { margin: 32px 0; color: var(--muted); font-size: 12.5px; }
a { color: var(--blue); text-decoration: none; }
a:hover { text-decoration: underline; }
@media print {
  @page { margin: 12mm; }
  body { font-size: 10.5px; }
  code, .mono, td.num { font-size: 9.5px; }
  .wrap { max-width: none; padding: 0; }
  header.verdict { padding: 8px 0; }
  .scroll { overflow: visible; }
  th, td { padding: 2px 6px; }
  td.where { min-width: 0; }
  .loc { display: none; }
  article.check { padding: 8px 10px 4px; }
  figure, tr { break-inside: avoid; page-break-inside: avoid; }
  thead { display: table-header-group; }
  h2, h3, p.explain { break-after: avoid; page-break-after: avoid; }
  details::details-content { content-visibility: visible; display: block; }
  summary { color: var(--ink); }
  a { color: inherit; }
}"""


def _badge(status: str) -> str:
    text = {"pass": "✓ PASS", "fail": "✗ FAIL", "error": "✗ ERROR"}[status]
    return f'<span class="badge {status}">{text}</span>'


def _html_summary(checks: Sequence[_Check], ids: Sequence[str]) -> str:
    rows = [
        '<table class="summary"><thead><tr><th>variant</th><th>vs</th><th>verdict</th>'
        '<th>first divergent tap / error</th><th class="num">worst max_abs_norm</th>'
        '<th class="num">time</th><th>artifact</th></tr></thead><tbody>'
    ]
    for check, uid in zip(checks, ids, strict=True):
        if check.error is not None:
            where = f'<span class="bad">{_e(_one_line(check.error, 160))}</span>'
        elif check.first is not None:
            reasons = "; ".join(f'<span class="nowrap">{_e(r)}</span>' for r in check.first.reasons)
            where = f"<code>{_e(check.first.name)}</code>: {reasons}"
        else:
            where = '<span class="muted">–</span>'
        cls = "" if check.passed else ' class="row-fail"'
        artifact = check.artifact or {}
        rows.append(
            f'<tr{cls}><td><a href="#{uid}">{_e(check.variant)}</a></td><td>{check.vs}</td>'
            f'<td>{_badge(check.status)}</td><td class="where">{where}</td>'
            f'<td class="num">{_sci(check.worst)}</td><td class="num">{_seconds(check.seconds)}'
            f'</td><td class="muted" title="{_e(artifact.get("path", ""))}">'
            f"{_e(_artifact_line(check.artifact, sha=False))}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _cell(value: str, bad: bool, source: str | None = None) -> str:
    attrs = ' class="num bad"' if bad else ' class="num"'
    if source:
        attrs += ' title="' + _e(f'budget from [budget."{source}"]') + '"'
    return f"<td{attrs}>{_e(value)}</td>"


def _html_taps(check: _Check) -> str:
    rows = [
        '<table class="taps"><thead><tr><th class="num">#</th><th>tap</th>'
        '<th class="loc">location</th>'
        '<th class="num">max_abs_norm / budget</th><th class="num">1-cosine / budget</th>'
        '<th class="num">SQNR dB</th><th class="num">top-1 / top-5</th>'
        "<th>worst image</th><th>status</th></tr></thead><tbody>"
    ]
    for t in check.taps:
        first = t is check.first
        cls = "row-first" if first else ("" if t.passed else "row-fail")
        status = '<span class="muted">ok</span>' if t.passed else '<span class="bad">over budget'
        if not t.passed:
            status += " ← first</span>" if first else "</span>"
        abs_text = _sci(t.max_abs_norm) + (
            "" if t.budget_abs is None else f" / {_lim(t.budget_abs)}"
        )
        cos_text = _sci(t.one_minus_cos) + (
            "" if t.budget_cos is None else f" / {_lim(t.budget_cos)}"
        )
        abs_source = t.sources.get("max_abs_norm")
        cos_source = t.sources.get("min_cosine")
        rows.append(
            f'<tr class="{cls}"><td class="num muted">{t.index + 1}</td>'
            f'<td><code>{_e(t.name)}</code></td><td class="muted nowrap loc">{_e(t.where)}</td>'
            + _cell(abs_text, "max_abs_norm" in t.failing, abs_source)
            + _cell(cos_text, "cosine" in t.failing, cos_source)
            + _cell(_fixed(t.sqnr_db, ".1f").replace("inf", "∞"), "sqnr_db" in t.failing)
            + _cell(_topk(t), bool(t.failing & {"top1_agreement", "top5_overlap"}))
            + f'<td>{_e(t.worst_image)}</td><td class="status">{status}</td></tr>'
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _html_check(check: _Check, uid: str) -> str:
    parts = [
        f'<article class="check {check.status}" id="{uid}">',
        f"<h3>{_e(check.label)} {_badge(check.status)}</h3>",
    ]
    meta = [f"{check.family}" if check.family else "", _seconds(check.seconds)]
    artifact = _artifact_line(check.artifact)
    if artifact:
        meta.append(artifact)
    parts.append(f'<p class="muted">{_e(" · ".join(m for m in meta if m))}</p>')
    if check.error is not None:
        parts.append(f'<pre class="error">{_e(check.error)}</pre>')
        parts.append("</article>")
        return "\n".join(parts)
    if check.explanation:
        cls = "explain" if check.passed else "explain bad"
        parts.append(f'<p class="{cls}">{_e(check.explanation)}</p>')
    for line in check.unmatched_lines():
        parts.append(f'<p class="explain unmatched">⚠ {_e(line)}</p>')
    if check.taps:
        parts.append('<figure><div class="scroll">')
        parts.append(_plot(check, f"{uid}-plot"))
        parts.append(
            "</div><figcaption>Each point is one tap's worst case over the fixture images; "
            "the dashed step line is that tap's budget and the shaded area is over budget."
            "</figcaption></figure>"
        )
        open_attr = "" if check.passed else " open"
        parts.append(
            f"<details{open_attr}><summary>Per-tap table ({len(check.taps)} taps, "
            f"{check.n_failing} over budget)</summary>"
        )
        parts.append(f'<div class="scroll">{_html_taps(check)}</div></details>')
    parts.append("</article>")
    return "\n".join(parts)


def _html_provenance(gate: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    weights = model.get("weights") or {}
    preprocess = model.get("preprocess") or {}
    images = [str(i.get("name", "?")) for i in model.get("images") or ()]
    rows = [
        ("weights", f"{weights.get('source', '?')}", f"sha256 {_short(weights.get('sha256'))}"),
        (
            "preprocess",
            _preprocess_line(preprocess.get("spec") or {}),
            f"sha256 {_short(preprocess.get('sha256'))}",
        ),
        (
            "input",
            f"{len(images)} images: {', '.join(images)}",
            f"sha256 {_short(model.get('input_sha256'))}",
        ),
        ("tolerances", str(model.get("tolerances", "?")), ""),
        ("config", str(model.get("config") or "?"), ""),
        *(
            [("budgets", "default (none measured for this model): parity budgets", "")]
            if model.get("measured_budgets") is False
            else []
        ),
        *(("n/a", f"{v} vs {vs}", reason) for v, vs, reason in _not_applicable(model)),
        (
            "run",
            f"parity {model.get('parity_version') or gate.get('parity_version', '?')}, "
            f"reference {_seconds(_num(model.get('reference_seconds')))}, "
            f"wall {_seconds(_num(model.get('wall_seconds')))}",
            "",
        ),
    ]
    body = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e(v)}</td><td><code>{_e(s)}</code></td></tr>"
        for k, v, s in rows
    )
    return f'<table class="prov">{body}</table>'


def render_html(gate: Mapping[str, Any]) -> str:
    """One self-contained HTML page: verdict, provenance, and per model a summary table
    and, per check, the per-layer error plot and per-tap table."""
    models = _models(gate, problems_first=True)
    checks = [c for _, cs in models for c in cs]
    passed = _gate_passed(gate, models)
    tally = _tally(_counts(checks))
    names = ", ".join(str(m.get("model", "?")) for m, _ in models) or "no models"
    verdict = "passed" if passed else "failed"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="parity">',
        f"<title>Parity gate {verdict}: {_e(names)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f'<header class="verdict {"pass" if passed else "fail"}"><div class="wrap">',
        f"<h1>{'✓' if passed else '✗'} Parity gate {verdict}</h1>",
        f"<p><strong>{_e(tally)}</strong> across {len(models)} model"
        f"{'s' if len(models) != 1 else ''} ({_e(names)}).</p>",
        f'<p class="muted">parity {_e(gate.get("parity_version", "?"))} · '
        f"{_e(gate.get('created', ''))} · each check compares a runtime variant with torch "
        "(<em>vs torch</em>) or with the stored goldens (<em>vs golden</em>), tap by tap in "
        "forward order.</p>",
        "</div></header>",
        '<main class="wrap">',
    ]
    for m_index, (model, model_checks) in enumerate(models):
        ids = [f"m{m_index}-c{c_index}" for c_index in range(len(model_checks))]
        ok = all(c.passed for c in model_checks) and bool(model.get("passed", True))
        out.append(f'<section id="m{m_index}">')
        out.append(
            f"<h2>{_e(model.get('model', '?'))} {_badge('pass' if ok else 'fail')} "
            f'<span class="muted" style="font-size:14px;font-weight:400">'
            f"{_e(_tally(_counts(model_checks)))}</span></h2>"
        )
        out.append(_html_provenance(gate, model))
        out.append(f'<div class="scroll">{_html_summary(model_checks, ids)}</div>')
        for check, uid in zip(model_checks, ids, strict=True):
            out.append(_html_check(check, uid))
        out.append("</section>")
    out += [
        "</main>",
        f'<footer class="wrap">Generated by parity {_e(gate.get("parity_version", "?"))} '
        "from the gate's report.json. Metrics: max_abs_norm = max |Δ| / max |reference| "
        "per image; 1-cosine of the flattened tap; SQNR = 10 log10(Σref² / Σ(Δ)²); all are "
        "the worst case over the fixture images.</footer>",
        "</body>",
        "</html>",
    ]
    page = "\n".join(out) + "\n"
    # ASCII with character references: the same page whatever encoding the file gets.
    return page.encode("ascii", "xmlcharrefreplace").decode("ascii")
