"""The HTML view: one self-contained page (inline SVG plots, CSS from ``report.css``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from parity.render.plot import esc, plot
from parity.render.view import (
    CheckView,
    artifact_line,
    as_number,
    count_statuses,
    fixed,
    gate_passed,
    lim,
    models_of,
    not_applicable_rows,
    one_line,
    preprocess_line,
    sci,
    seconds_text,
    short_sha,
    tally,
    topk_text,
)


@cache
def _css() -> str:
    """The page's style sheet, shipped as package data next to this module."""
    return resources.files("parity.render").joinpath("report.css").read_text("utf-8")


def badge(status: str) -> str:
    text = {"pass": "✓ PASS", "fail": "✗ FAIL", "error": "✗ ERROR"}[status]
    return f'<span class="badge {status}">{text}</span>'


def _html_summary(checks: Sequence[CheckView], ids: Sequence[str]) -> str:
    rows = [
        '<table class="summary"><thead><tr><th>variant</th><th>vs</th><th>verdict</th>'
        '<th>first divergent tap / error</th><th class="num">worst max_abs_norm</th>'
        '<th class="num">time</th><th>artifact</th></tr></thead><tbody>'
    ]
    for check, uid in zip(checks, ids, strict=True):
        if check.error is not None:
            where = f'<span class="bad">{esc(one_line(check.error, 160))}</span>'
        elif check.first is not None:
            reasons = "; ".join(
                f'<span class="nowrap">{esc(r)}</span>' for r in check.first.reasons
            )
            where = f"<code>{esc(check.first.name)}</code>: {reasons}"
        else:
            where = '<span class="muted">–</span>'
        cls = "" if check.passed else ' class="row-fail"'
        artifact = check.artifact or {}
        rows.append(
            f'<tr{cls}><td><a href="#{uid}">{esc(check.variant)}</a></td><td>{check.vs}</td>'
            f'<td>{badge(check.status)}</td><td class="where">{where}</td>'
            f'<td class="num">{sci(check.worst)}</td><td class="num">{seconds_text(check.seconds)}'
            f'</td><td class="muted" title="{esc(artifact.get("path", ""))}">'
            f"{esc(artifact_line(check.artifact, sha=False))}</td></tr>"
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _cell(value: str, bad: bool, source: str | None = None) -> str:
    attrs = ' class="num bad"' if bad else ' class="num"'
    if source:
        attrs += ' title="' + esc(f'budget from [budget."{source}"]') + '"'
    return f"<td{attrs}>{esc(value)}</td>"


def _html_taps(check: CheckView) -> str:
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
        abs_text = sci(t.max_abs_norm) + ("" if t.budget_abs is None else f" / {lim(t.budget_abs)}")
        cos_text = sci(t.one_minus_cos) + (
            "" if t.budget_cos is None else f" / {lim(t.budget_cos)}"
        )
        abs_source = t.sources.get("max_abs_norm")
        cos_source = t.sources.get("min_cosine")
        rows.append(
            f'<tr class="{cls}"><td class="num muted">{t.index + 1}</td>'
            f'<td><code>{esc(t.name)}</code></td><td class="muted nowrap loc">{esc(t.where)}</td>'
            + _cell(abs_text, "max_abs_norm" in t.failing, abs_source)
            + _cell(cos_text, "cosine" in t.failing, cos_source)
            + _cell(fixed(t.sqnr_db, ".1f").replace("inf", "∞"), "sqnr_db" in t.failing)
            + _cell(topk_text(t), bool(t.failing & {"top1_agreement", "top5_overlap"}))
            + f'<td>{esc(t.worst_image)}</td><td class="status">{status}</td></tr>'
        )
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _html_check(check: CheckView, uid: str) -> str:
    parts = [
        f'<article class="check {check.status}" id="{uid}">',
        f"<h3>{esc(check.label)} {badge(check.status)}</h3>",
    ]
    meta = [f"{check.family}" if check.family else "", seconds_text(check.seconds)]
    artifact = artifact_line(check.artifact)
    if artifact:
        meta.append(artifact)
    parts.append(f'<p class="muted">{esc(" · ".join(m for m in meta if m))}</p>')
    if check.error is not None:
        parts.append(f'<pre class="error">{esc(check.error)}</pre>')
        parts.append("</article>")
        return "\n".join(parts)
    if check.explanation:
        cls = "explain" if check.passed else "explain bad"
        parts.append(f'<p class="{cls}">{esc(check.explanation)}</p>')
    for line in check.unmatched_lines():
        parts.append(f'<p class="explain unmatched">⚠ {esc(line)}</p>')
    if check.taps:
        parts.append('<figure><div class="scroll">')
        parts.append(plot(check, f"{uid}-plot"))
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
        ("weights", f"{weights.get('source', '?')}", f"sha256 {short_sha(weights.get('sha256'))}"),
        (
            "preprocess",
            preprocess_line(preprocess.get("spec") or {}),
            f"sha256 {short_sha(preprocess.get('sha256'))}",
        ),
        (
            "input",
            f"{len(images)} images: {', '.join(images)}",
            f"sha256 {short_sha(model.get('input_sha256'))}",
        ),
        ("tolerances", str(model.get("tolerances", "?")), ""),
        ("config", str(model.get("config") or "?"), ""),
        *(
            [("budgets", "default (none measured for this model): parity budgets", "")]
            if model.get("measured_budgets") is False
            else []
        ),
        *(("n/a", f"{v} vs {vs}", reason) for v, vs, reason in not_applicable_rows(model)),
        (
            "run",
            f"parity {model.get('parity_version') or gate.get('parity_version', '?')}, "
            f"reference {seconds_text(as_number(model.get('reference_seconds')))}, "
            f"wall {seconds_text(as_number(model.get('wall_seconds')))}",
            "",
        ),
    ]
    body = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(v)}</td><td><code>{esc(s)}</code></td></tr>"
        for k, v, s in rows
    )
    return f'<table class="prov">{body}</table>'


def render_html(gate: Mapping[str, Any]) -> str:
    """One self-contained HTML page: verdict, provenance, and per model a summary table
    and, per check, the per-layer error plot and per-tap table."""
    models = models_of(gate, problems_first=True)
    checks = [c for _, cs in models for c in cs]
    passed = gate_passed(gate, models)
    summary_line = tally(count_statuses(checks))
    names = ", ".join(str(m.get("model", "?")) for m, _ in models) or "no models"
    verdict = "passed" if passed else "failed"
    out = [
        f'<header class="verdict {"pass" if passed else "fail"}"><div class="wrap">',
        f"<h1>{'✓' if passed else '✗'} Parity gate {verdict}</h1>",
        f"<p><strong>{esc(summary_line)}</strong> across {len(models)} model"
        f"{'s' if len(models) != 1 else ''} ({esc(names)}).</p>",
        f'<p class="muted">parity {esc(gate.get("parity_version", "?"))} · '
        f"{esc(gate.get('created', ''))} · each check compares a runtime variant with torch "
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
            f"<h2>{esc(model.get('model', '?'))} {badge('pass' if ok else 'fail')} "
            f'<span class="muted" style="font-size:14px;font-weight:400">'
            f"{esc(tally(count_statuses(model_checks)))}</span></h2>"
        )
        out.append(_html_provenance(gate, model))
        out.append(f'<div class="scroll">{_html_summary(model_checks, ids)}</div>')
        for check, uid in zip(model_checks, ids, strict=True):
            out.append(_html_check(check, uid))
        out.append("</section>")
    out += [
        "</main>",
        f'<footer class="wrap">Generated by parity {esc(gate.get("parity_version", "?"))} '
        "from the gate's report.json. Metrics: max_abs_norm = max |Δ| / max |reference| "
        "per image; 1-cosine of the flattened tap; SQNR = 10 log10(Σref² / Σ(Δ)²); all are "
        "the worst case over the fixture images.</footer>",
    ]
    return page(f"Parity gate {verdict}: {names}", out)


def page(title: str, body: Sequence[str]) -> str:
    """A self-contained HTML page (the report's style sheet inline) around ``body``."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="parity">',
        f"<title>{esc(title)}</title>",
        f"<style>\n{_css().rstrip()}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
    ]
    text = "\n".join(out) + "\n"
    # ASCII with character references: the same page whatever encoding the file gets.
    return text.encode("ascii", "xmlcharrefreplace").decode("ascii")
