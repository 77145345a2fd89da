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

The package: :mod:`~parity.render.view` (the view model every format shows),
:mod:`~parity.render.markdown`, :mod:`~parity.render.junit`, :mod:`~parity.render.html`
with :mod:`~parity.render.plot` (the SVG) and ``report.css``.
"""

from __future__ import annotations

from parity.render.html import render_html
from parity.render.junit import render_junit
from parity.render.markdown import MARKDOWN_LIMIT, render_markdown

__all__ = ["MARKDOWN_LIMIT", "render_html", "render_junit", "render_markdown"]
