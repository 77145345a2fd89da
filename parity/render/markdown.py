"""The Markdown view: a pull-request comment kept under GitHub's comment limit."""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from parity.render.view import (
    CheckView,
    count_statuses,
    fixed,
    gate_passed,
    lim,
    models_of,
    not_applicable_rows,
    one_line,
    sci,
    seconds_text,
    short_sha,
    tally,
    topk_text,
    xml_text,
)

#: Size budget of the Markdown summary in UTF-8 bytes: GitHub refuses comments over
#: 65,536 characters; bytes are a safe upper bound on characters, minus a margin.
MARKDOWN_LIMIT = 60_000

# Markdown syntax in a cell: backslash, code, emphasis (an underscore only at a word edge:
# GFM never reads intraword ones, so `max_abs_norm` stays readable), links, pipes.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|#~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z]))")


def _md(text: Any) -> str:
    """Text for a Markdown table cell: one line, HTML and Markdown syntax neutralised."""
    escaped = html.escape(" ".join(xml_text(text).split()), quote=False).replace("&gt;", ">")
    escaped = _MD_SPECIAL.sub(r"\\\1", escaped)
    return "\\" + escaped if escaped.startswith((">", "-", "+")) else escaped


def _md_code(text: Any) -> str:
    """Monospace that survives any tap name, also inside a table cell."""
    return f"<code>{_md(text)}</code>"


_MD_ICON = {"pass": "✅", "fail": "❌", "error": "💥"}


def _md_summary(model: Mapping[str, Any], checks: Sequence[CheckView]) -> str:
    counts = count_statuses(checks)
    icon = "✅" if all(c.passed for c in checks) and model.get("passed", True) else "❌"
    lines = [
        f"### {icon} {_md_code(model.get('model', '?'))}: {tally(counts)}",
        "",
        "| variant | vs | verdict | first divergent tap | worst max_abs_norm | time |",
        "|---|---|---|---|--:|--:|",
    ]
    for c in checks:
        verdict = {"pass": "✅ pass", "fail": "❌ **FAIL**", "error": "💥 **ERROR**"}[c.status]
        if c.error is not None:
            where = _md(one_line(c.error, 200))
        elif c.first is not None:
            where = f"{_md_code(c.first.name)}: {_md(c.first.reason)}"
        else:
            where = "–"
        lines.append(
            f"| {_md(c.variant)} | {c.vs} | {verdict} | {where} | {sci(c.worst)} "
            f"| {seconds_text(c.seconds)} |"
        )
    for variant, vs, reason in not_applicable_rows(model):
        lines.append(f"| {_md(variant)} | {vs} | ➖ n/a | {_md(reason)} | – | – |")
    return "\n".join(lines)


def _md_provenance(gate: Mapping[str, Any], model: Mapping[str, Any]) -> str:
    weights = model.get("weights") or {}
    preprocess = model.get("preprocess") or {}
    images = model.get("images") or ()
    version = model.get("parity_version") or gate.get("parity_version", "?")
    return (
        f"<sub>weights {_md_code(short_sha(weights.get('sha256')))}"
        f" ({_md(weights.get('source', '?'))})"
        f" · preprocess {_md_code(short_sha(preprocess.get('sha256')))}"
        f" · input {_md_code(short_sha(model.get('input_sha256')))} ({len(images)} images)"
        f" · tolerances {_md_code(model.get('tolerances', '?'))}"
        f" · config {_md_code(model.get('config') or '?')}"
        + (
            " · **default budgets (none measured for this model)**"
            if model.get("measured_budgets") is False
            else ""
        )
        + f" · parity {_md(version)}</sub>"
    )


def _md_unmatched(checks: Sequence[CheckView]) -> str:
    lines = [f"- ⚠️ {_md(c.label)}: {_md(line)}" for c in checks for line in c.unmatched_lines()]
    return "\n\n" + "\n".join(lines) if lines else ""


def _md_details(check: CheckView, compact: bool = False) -> str:
    """A failing check's ``<details>``: explanation and per-tap table (failing taps only if
    ``compact``)."""
    if check.error is not None:
        text = xml_text(check.error).strip()
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
            f"{sci(t.max_abs_norm)} / {lim(t.budget_abs)}" if t.budget_abs else sci(t.max_abs_norm)
        )
        cos_cell = (
            f"{sci(t.one_minus_cos)} / {lim(t.budget_cos)}"
            if t.budget_cos
            else sci(t.one_minus_cos)
        )
        if "max_abs_norm" in t.failing:
            abs_cell = f"**{abs_cell}**"
        if "cosine" in t.failing:
            cos_cell = f"**{cos_cell}**"
        topk = topk_text(t)
        if t.failing & {"top1_agreement", "top5_overlap"}:
            topk = f"**{topk}**"
        sqnr = fixed(t.sqnr_db, ".1f").replace("inf", "∞")
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


def _fit(
    full: list[list[str]], compact: list[list[str]], room: int
) -> tuple[list[list[str]], int, int]:
    """The per-tap blocks that fit in ``room`` bytes, per model: all in full, else all
    compact, else in order each as long as still fits; with how many were shortened and
    left out."""

    def total(blocks: list[list[str]]) -> int:
        return sum(_size(b) + 2 for bs in blocks for b in bs)

    if total(full) <= room:  # everything fits
        return full, 0, 0
    if total(compact) <= room:  # every failing check, failing taps only
        return compact, sum(len(bs) for bs in compact), 0
    omitted = shortened = 0
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
    return blocks, shortened, omitted


def _cut(text: str, max_bytes: int) -> str:
    """``text`` cut by whole lines to ``max_bytes``, with a note (the summary tables alone
    are too long)."""
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
    return "\n".join(kept) + note


def render_markdown(gate: Mapping[str, Any], max_bytes: int = MARKDOWN_LIMIT) -> str:
    """A pull-request comment: verdict, one table per model, per-tap tables of failures.

    The per-tap ``<details>`` come last in priority: when the whole would exceed
    ``max_bytes`` they shrink to their failing taps, then are left out with a note; the
    verdict and the summary tables are always kept (cut with a note only if they alone
    are too long).
    """
    models = models_of(gate, problems_first=True)
    checks = [c for _, cs in models for c in cs]
    passed = gate_passed(gate, models)
    counts = count_statuses(checks)
    version = gate.get("parity_version", "?")
    n_models = len(models)
    head = [
        f"## {'✅ Parity gate passed' if passed else '❌ Parity gate failed'}",
        "",
        f"**{tally(counts)}** across {n_models} model{'s' if n_models != 1 else ''}. "
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
    fixed_bytes = _size("\n".join(head)) + _size(footer) + sum(_size(e) + 4 for e in essentials)
    room = max_bytes - fixed_bytes - note_reserve
    failing = [[c for c in cs if not c.passed] for _, cs in models]
    full = [[_md_details(c) for c in cs] for cs in failing]
    compact = [[_md_details(c, compact=True) for c in cs] for cs in failing]

    blocks, shortened, omitted = _fit(full, compact, room)

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
    return text if _size(text) <= max_bytes else _cut(text, max_bytes)
