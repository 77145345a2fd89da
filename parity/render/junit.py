"""The JUnit XML view: one testsuite per model, one testcase per check."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from parity.render.view import (
    CheckView,
    TapView,
    artifact_line,
    count_statuses,
    fixed,
    lim,
    models_of,
    not_applicable_rows,
    one_line,
    sci,
    topk_text,
    xml_text,
)


def _tap_lines(check: CheckView) -> str:
    """The per-tap table as fixed-width text, for a JUnit failure body."""
    header = ("tap", "max_abs_norm", "budget", "1-cosine", "budget", "SQNR dB", "top-1/5",
              "worst image", "status")  # fmt: skip
    rows = [header]
    for t in check.taps:
        status = "ok" if t.passed else "FAIL"
        if t is check.first:
            status += " <- first"

        def mark(text: str, *metrics: str, tap: TapView = t) -> str:
            return text + ("*" if tap.failing & set(metrics) else "")

        rows.append(
            (
                t.name,
                mark(sci(t.max_abs_norm), "max_abs_norm"),
                lim(t.budget_abs),
                mark(sci(t.one_minus_cos), "cosine"),
                lim(t.budget_cos),
                mark(fixed(t.sqnr_db, ".1f"), "sqnr_db"),
                mark(topk_text(t).replace(" ", "") or "-", "top1_agreement", "top5_overlap"),
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


def _testcase(suite: ET.Element, name: str, check: CheckView) -> None:
    """One check's testcase: its error or failure (with the per-tap table), its artifact
    and unmatched taps as system-out."""
    case = ET.SubElement(
        suite,
        "testcase",
        classname=xml_text(f"parity.{name}"),
        name=xml_text(check.label),
        time=f"{check.seconds or 0.0:.3f}",
    )
    if check.error is not None:
        error = ET.SubElement(
            case, "error", message=xml_text(one_line(check.error)), type="RuntimeError"
        )
        error.text = xml_text(check.error)
    elif not check.passed:
        first = check.first
        message = (
            f"first divergent tap '{first.name}': {first.reason}"
            if first is not None
            else "check failed"
        )
        failure = ET.SubElement(case, "failure", message=xml_text(message), type="ToleranceFailure")
        failure.text = xml_text(_tap_lines(check))
    artifact = artifact_line(check.artifact)
    out = ([f"artifact: {artifact}"] if artifact else []) + check.unmatched_lines()
    if out:
        ET.SubElement(case, "system-out").text = xml_text("\n".join(out))


def render_junit(gate: Mapping[str, Any]) -> str:
    """JUnit XML: one testsuite per model, one testcase per variant and mode."""
    models = models_of(gate)
    created = str(gate.get("created", ""))
    root = ET.Element("testsuites", name="parity")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    total_seconds = 0.0
    for model, checks in models:
        name = str(model.get("model", "?"))
        counts = count_statuses(checks)
        seconds = sum(c.seconds or 0.0 for c in checks)
        skipped = not_applicable_rows(model)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=xml_text(f"parity.{name}"),
            tests=str(len(checks) + len(skipped)),
            failures=str(counts["fail"]),
            errors=str(counts["error"]),
            skipped=str(len(skipped)),
            time=f"{seconds:.3f}",
        )
        if created:
            suite.set("timestamp", xml_text(created))
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
                ET.SubElement(properties, "property", name=key, value=xml_text(value))
        for check in checks:
            _testcase(suite, name, check)
        for variant, vs, reason in skipped:
            case = ET.SubElement(
                suite, "testcase", classname=xml_text(f"parity.{name}"),
                name=xml_text(f"{variant} vs {vs}"), time="0.000",
            )  # fmt: skip
            ET.SubElement(case, "skipped", message=xml_text(f"n/a: {reason}"))
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
