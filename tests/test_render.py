"""The gate renderers (parity.render): Markdown, JUnit XML, HTML, and the HTML in a browser.

Pure Python and fast: the inputs are real gate dicts (``parity.report.gate_to_dict``) stored
under tests/data/, both of mobilenet_v2 checked live and against the goldens:

* ``gate_pass.json``: the onnxruntime family with fixtures/tolerances.toml (all pass);
* ``gate_fail.json``: onnxruntime + keras with tests/data/tolerances_tight.toml (budgets a
  few times under the fp32 noise floor, different per tap, with a cosine budget), so most
  checks fail and the first divergent tap differs between checks.

Regenerate (artifacts cached under PARITY_CACHE_DIR; import torch before TensorFlow)::

    import torch, torchvision
    from parity.harness import RunConfig, run_parity
    from parity.report import gate_to_dict
    gate = gate_to_dict([run_parity(RunConfig(model="mobilenet_v2",
        runtimes=["onnxruntime", "keras"], tolerances="tests/data/tolerances_tight.toml"),
        modes=("golden", "live"))])
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from parity.render import render_html, render_junit, render_markdown

DATA = Path(__file__).parent / "data"
CHROMIUM = Path("/usr/bin/chromium")
NASTY = '<b>&"'  # a tap name that breaks any renderer that forgets to escape


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


@pytest.fixture
def gate_fail() -> dict[str, Any]:
    return _load("gate_fail.json")


@pytest.fixture
def gate_pass() -> dict[str, Any]:
    return _load("gate_pass.json")


def _checks(gate: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for m in gate["models"] for v in m["variants"]]


def _label(variant: dict[str, Any]) -> str:
    return f"{variant['name']} vs {'torch' if variant['mode'] == 'live' else 'golden'}"


def _with_nasty_tap(gate: dict[str, Any]) -> dict[str, Any]:
    """Rename each check's first divergent tap (or its first tap) to NASTY."""
    gate = copy.deepcopy(gate)
    for variant in _checks(gate):
        old = variant.get("first_divergent_tap") or variant["taps"][0]["name"]
        for tap in variant["taps"]:
            if tap["name"] == old:
                tap["name"] = NASTY
        if variant.get("first_divergent_tap"):
            variant["first_divergent_tap"] = NASTY
            variant["explanation"] = variant["explanation"].replace(f"'{old}'", f"'{NASTY}'")
    return gate


def _with_error(gate: dict[str, Any]) -> dict[str, Any]:
    """Add a check that died with a runtime error (no verdict, no taps)."""
    gate = copy.deepcopy(gate)
    gate["passed"] = False
    gate["models"][0]["passed"] = False
    gate["models"][0]["variants"].append(
        {
            "name": "litert_int8",
            "family": "litert",
            "mode": "live",
            "passed": False,
            "seconds": 0.5,
            "error": 'RuntimeError: tensor <input> & "x" not found\x07\nTraceback: ```',
            "artifact": None,
        }
    )
    return gate


class StrictHTML(HTMLParser):
    """html.parser plus the checks it does not make: every tag closed, in order."""

    VOID = {"meta", "link", "br", "hr", "img", "input", "wbr", "col", "source"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @classmethod
    def check(cls, page: str) -> StrictHTML:
        parser = cls()
        parser.feed(page)
        parser.close()
        assert not parser.errors, parser.errors[:5]
        assert parser.stack == [], f"unclosed: {parser.stack}"
        return parser


# --------------------------------------------------------------------------------------
# Markdown


def test_markdown_failing_names_verdict_and_first_divergent_taps(gate_fail: dict) -> None:
    text = render_markdown(gate_fail)
    assert text.startswith("## ❌ Parity gate failed")
    failing = [v for v in _checks(gate_fail) if not v["passed"]]
    assert len(failing) == 10
    assert "**10 of 11 checks failed**" in text
    for variant in failing:
        tap = variant["first_divergent_tap"]
        # the summary row names the tap and the broken budget, numbers included
        first = next(t for t in variant["taps"] if t["name"] == tap)
        value = first["metrics"]["max_abs_norm"]
        limit = first["budget"]["max_abs_norm"]
        assert f"<code>{tap}</code>: max_abs_norm {value:.2e} > {limit:.0e}" in text
        assert f"<b>{_label(variant)}</b>: first divergent tap <code>{tap}</code>" in text
    assert text.count("<details>") == text.count("</details>") == len(failing)
    # provenance: short hashes and the version
    model = gate_fail["models"][0]
    for sha in (model["weights"]["sha256"], model["preprocess"]["sha256"], model["input_sha256"]):
        assert f"<code>{sha[:12]}</code>" in text
    assert "parity 0.1.0" in text
    # the cosine budget is shown as 1-cosine, not as judge()'s 3-digit "cosine 1 < 1"
    assert "**1.15e-11 / 1e-11**" in text
    assert len(text.encode()) < 65_536


def test_markdown_passing_shows_check_mark(gate_pass: dict) -> None:
    text = render_markdown(gate_pass)
    assert text.startswith("## ✅ Parity gate passed")
    assert "❌" not in text
    assert "<details>" not in text
    assert text.count("✅ pass") == len(_checks(gate_pass))


def test_markdown_tables_are_well_formed(gate_fail: dict) -> None:
    text = render_markdown(_with_nasty_tap(gate_fail))
    assert "<b>&" not in text  # escaped: &lt;b&gt;&amp;
    assert '<code>&lt;b>&amp;"</code>' in text
    for line in text.splitlines():
        if line.startswith(("| variant |", "| tap |")):
            columns = line.count(" | ")
        elif line.startswith("| ") and not line.startswith("|--"):
            unescaped = line.replace("\\|", "")
            assert unescaped.count(" | ") == columns, line


def test_markdown_renders_as_github_flavoured_tables(gate_fail: dict) -> None:
    """Through a CommonMark + tables renderer (markdown-it, a dependency of rich)."""
    import markdown_it

    gate = _with_error(_with_nasty_tap(gate_fail))
    rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    parser = StrictHTML.check(rendered.render(render_markdown(gate)))
    tags = [t for t, _ in parser.tags]
    assert "b" in tags  # the <summary><b>label</b> ... of our own markup
    assert tags.count("table") == 1 + sum(
        not v["passed"] and not v.get("error") for v in _checks(gate)
    )
    assert tags.count("details") == sum(not v["passed"] for v in _checks(gate))
    text = "".join(parser.text)
    assert f"{NASTY}: max_abs_norm 1.56e-06 > 1e-06" in text
    assert 'RuntimeError: tensor <input> & "x" not found' in text
    # one <b> per <summary>: the nasty tap name never became a tag
    assert tags.count("b") == tags.count("summary")


def test_markdown_shrinks_to_the_comment_limit(gate_fail: dict) -> None:
    full = render_markdown(gate_fail)
    limit = 9_000
    text = render_markdown(gate_fail, max_bytes=limit)
    assert len(full.encode()) > limit >= len(text.encode())
    assert text.startswith("## ❌ Parity gate failed")
    assert "Shortened to fit a GitHub comment" in text
    rows = [line for line in full.splitlines() if line.startswith("| ") and " s |" in line]
    assert len(rows) == len(_checks(gate_fail))
    assert all(row in text for row in rows)  # every summary row survives
    assert text.count("<details>") == text.count("</details>")
    # a huge matrix: even the summary tables are cut, with a note
    many = copy.deepcopy(gate_fail)
    many["models"] = many["models"] * 12
    text = render_markdown(many, max_bytes=10_000)
    assert len(text.encode()) <= 10_000
    assert "Cut to fit a GitHub comment" in text
    assert "<details>" not in text and text.startswith("## ❌ Parity gate failed")


def test_markdown_runtime_error(gate_pass: dict) -> None:
    text = render_markdown(_with_error(gate_pass))
    assert text.startswith("## ❌")
    assert "💥 **ERROR**" in text
    assert 'tensor &lt;input> &amp; "x" not found' in text
    assert "````" in text  # the fence outgrows the backticks inside the error


# --------------------------------------------------------------------------------------
# JUnit XML


def test_junit_counts_and_failure_messages(gate_fail: dict) -> None:
    root = ET.fromstring(render_junit(gate_fail))
    variants = _checks(gate_fail)
    failing = [v for v in variants if not v["passed"]]
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("11", "10", "0")
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["parity.mobilenet_v2"]
    suite = suites[0]
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("11", "10", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [_label(v) for v in variants]
    assert {c.get("classname") for c in cases} == {"parity.mobilenet_v2"}
    assert all(float(c.get("time") or -1) > 0 for c in cases)
    for case, variant in zip(cases, variants, strict=True):
        failure = case.find("failure")
        if variant["passed"]:
            assert failure is None
            continue
        assert failure is not None
        message = failure.get("message") or ""
        assert message.startswith(f"first divergent tap '{variant['first_divergent_tap']}': ")
        assert "max_abs_norm" in message
        body = failure.text or ""
        assert all(t["name"] in body for t in variant["taps"])
        assert "<- first" in body
    assert len(failing) == sum(c.find("failure") is not None for c in cases)
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["weights_sha256"] == gate_fail["models"][0]["weights"]["sha256"]


def test_junit_passing(gate_pass: dict) -> None:
    root = ET.fromstring(render_junit(gate_pass))
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("9", "0", "0")
    assert root.find(".//failure") is None and root.find(".//error") is None


def test_junit_error_and_escaping(gate_fail: dict) -> None:
    text = render_junit(_with_error(_with_nasty_tap(gate_fail)))
    root = ET.fromstring(text)  # control characters and markup survive as valid XML
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("12", "10", "1")
    error = root.find(".//testcase[@name='litert_int8 vs torch']/error")
    assert error is not None
    assert error.get("message", "").startswith('RuntimeError: tensor <input> & "x" not found')
    messages = [f.get("message", "") for f in root.iter("failure")]
    assert all(m.startswith(f"first divergent tap '{NASTY}'") for m in messages)
    assert text.isascii()


# --------------------------------------------------------------------------------------
# HTML


def test_html_structure(gate_fail: dict) -> None:
    page = render_html(gate_fail)
    parser = StrictHTML.check(page)
    variants = _checks(gate_fail)
    assert page.count("<svg") == len(variants)
    assert [t for t, _ in parser.tags].count("title") >= 1 + len(variants)  # page + each svg
    assert "<title>Parity gate failed: mobilenet_v2</title>" in page
    budgets = [a for t, a in parser.tags if t == "path" and a.get("class") == "budget"]
    assert len(budgets) >= 2 * len(variants)  # a step line per panel
    # red markers: exactly the (tap, metric) pairs over budget
    red = {
        (a["data-tap"], a["data-metric"])
        for t, a in parser.tags
        if "data-tap" in a and "fail" in (a.get("class") or "").split()
    }
    expected = set()
    for variant in variants:
        for tap in variant["taps"]:
            for failure in tap["failures"]:
                metric = failure.split()[0]
                expected.add((tap["name"], metric))
    assert red == expected
    # every failing check is annotated at its first divergent tap and its table is open
    for variant in variants:
        if not variant["passed"]:
            assert f"first divergent: {variant['first_divergent_tap']}</text>" in page
    details = [a for t, a in parser.tags if t == "details"]
    assert sum("open" in a for a in details) == sum(not v["passed"] for v in variants)
    # exact zeros (torch vs golden) are drawn at the floor, hollow
    zeros = [a for t, a in parser.tags if "hollow" in (a.get("class") or "") and "data-tap" in a]
    assert len(zeros) >= 21
    assert page.isascii()


def test_html_passing(gate_pass: dict) -> None:
    page = render_html(gate_pass)
    parser = StrictHTML.check(page)
    assert page.count("<svg") == len(_checks(gate_pass))
    assert "Parity gate passed" in page
    assert not any("open" in a for t, a in parser.tags if t == "details")
    assert not any("data-tap" in a and "fail" in (a.get("class") or "") for _, a in parser.tags)


def test_html_escapes_everything(gate_fail: dict) -> None:
    page = render_html(_with_error(_with_nasty_tap(gate_fail)))
    parser = StrictHTML.check(page)
    assert "b" not in {t for t, _ in parser.tags}
    assert NASTY not in page
    assert "&lt;b&gt;&amp;&quot;" in page
    text = "".join(parser.text)
    assert f"first divergent: {NASTY}" in text
    assert any(a.get("data-tap") == NASTY for _, a in parser.tags)
    # the runtime error is shown, with no plot
    assert 'tensor <input> & "x" not found' in text
    assert page.count("<svg") == len(_checks(gate_fail))


def test_html_odd_values(gate_fail: dict) -> None:
    """inf/nan metrics, a missing budget, one tap, long names: no crash, valid page."""
    gate = copy.deepcopy(gate_fail)
    variant = gate["models"][0]["variants"][1]
    variant["taps"][3]["metrics"]["max_abs_norm"] = "inf"
    variant["taps"][4]["metrics"]["max_abs_norm"] = "nan"
    variant["taps"][5]["budget"].pop("max_abs_norm")
    variant["taps"][6]["name"] = "a.very.long.module.path.of.some.transformer.block.attn"
    single = gate["models"][0]["variants"][2]
    single["taps"] = single["taps"][-1:]
    page = render_html(gate)
    StrictHTML.check(page)
    assert page.count("<svg") == len(_checks(gate))
    render_junit(gate)
    render_markdown(gate)


def test_empty_gate() -> None:
    gate = {"parity_version": "0.1.0", "created": "", "passed": True, "models": []}
    StrictHTML.check(render_html(gate))
    ET.fromstring(render_junit(gate))
    assert render_markdown(gate).startswith("## ✅")


# --------------------------------------------------------------------------------------
# A real browser


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium not installed at /usr/bin/chromium "
    "(install it with: apt-get install -y chromium)",
)
def test_html_screenshot_in_chromium(gate_fail: dict, tmp_path: Path) -> None:
    from PIL import Image as image

    page = tmp_path / "report.html"
    page.write_text(render_html(gate_fail))
    png = tmp_path / "report.png"
    result = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={png}",
            "--window-size=1400,2000",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert png.exists(), result.stderr[-2000:]
    if os.environ.get("PARITY_KEEP_SCREENSHOT"):  # to look at it: a path to copy it to
        shutil.copy(png, os.environ["PARITY_KEEP_SCREENSHOT"])
    with image.open(png) as shot:
        rgb = shot.convert("RGB")
        assert rgb.size == (1400, 2000)
        colours = rgb.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "blank screenshot"

    def count(match: Callable[[int, int, int], bool]) -> int:
        return sum(n for n, (r, g, b) in colours if match(r, g, b))

    # the failing points (#cf222e) and the budget step lines (#9a6700)
    red = count(lambda r, g, b: r > 180 and g < 70 and b < 80)
    amber = count(lambda r, g, b: 130 < r < 180 and 80 < g < 125 and b < 40)
    assert red > 500, f"only {red} red pixels"
    assert amber > 200, f"only {amber} budget-line pixels"
