"""The per-layer error plot of one check: inline SVG, log-scale panels against the budget."""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from parity.render.view import CheckView, TapView, lim, sci, xml_text

# Float64 cosine cannot resolve 1 - cosine below about 1e-16: the plot's floor for it.
_COSINE_FLOOR_EXP = -16
# At most this many decades on a log axis; smaller values are drawn at the floor.
_MAX_DECADES = 14


def esc(text: Any) -> str:
    """Escaped for HTML text and attributes, control characters dropped."""
    return html.escape(xml_text(text), quote=True)


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


@dataclasses.dataclass(frozen=True)
class _Frame:
    """One panel's geometry: tap positions and the log axis [10^lo, 10^hi] on the page."""

    xs: Sequence[float]
    pitch: float
    x0: float
    x1: float
    top: float
    height: float
    lo: int
    hi: int

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def floor(self) -> float:
        return 10.0**self.lo

    def y(self, value: float) -> float:
        return self.top + self.height * (self.hi - math.log10(value)) / (self.hi - self.lo)


def _panel(
    out: list[str],
    series: _Series,
    taps: Sequence[TapView],
    xs: Sequence[float],
    pitch: float,
    x0: float,
    x1: float,
    top: float,
    height: float,
    first: TapView | None,
) -> None:
    """One log-scale panel: grid, over-budget zone, budget steps, values, markers."""
    lo, hi = _decades(series)
    frame = _Frame(xs, pitch, x0, x1, top, height, lo, hi)
    out.append(f'<text class="ptitle" x="{_f(x0)}" y="{_f(top - 9)}">{esc(series.title)}</text>')
    out.append(
        f'<rect x="{_f(x0)}" y="{_f(top)}" width="{_f(x1 - x0)}" height="{_f(height)}" '
        'fill="#ffffff" stroke="#d1d9e0"/>'
    )
    steps = _budget_zones(out, series, frame)
    # Decade grid and labels.
    every = 1 if height / (hi - lo) >= 26 else 2
    for exp in range(lo, hi + 1):
        gy = frame.y(10.0**exp)
        out.append(f'<line class="grid" x1="{_f(x0)}" x2="{_f(x1)}" y1="{_f(gy)}" y2="{_f(gy)}"/>')
        if (hi - exp) % every == 0:
            out.append(f'<text class="ylab" x="{_f(x0 - 6)}" y="{_f(gy + 4)}">{_pow10(exp)}</text>')
    if first is not None:
        fx = xs[first.index]
        out.append(
            f'<line class="firstline" x1="{_f(fx)}" x2="{_f(fx)}" y1="{_f(top)}" '
            f'y2="{_f(frame.bottom)}"/>'
        )
    for d in steps:
        out.append(f'<path class="budget" d="{d}"><title>{esc(series.short)} budget</title></path>')
    if not steps:
        out.append(
            f'<text class="note" x="{_f(x1 - 6)}" y="{_f(top + 14)}" text-anchor="end">'
            f"no {esc(series.short)} budget</text>"
        )
    # The values: a thin line through all of them, then one marker per tap.
    points: list[tuple[float, float, str]] = []  # x, y, kind
    for i, value in enumerate(series.values):
        if value is None:
            continue
        if not math.isfinite(value):
            points.append((xs[i], top, "top"))
        elif value < frame.floor:
            points.append((xs[i], frame.bottom, "floor"))
        else:
            points.append((xs[i], frame.y(value), "value"))
    if len(points) > 1:
        coords = " ".join(f"{_f(px)},{_f(py)}" for px, py, _ in points)
        out.append(f'<polyline class="trace" points="{coords}"/>')
    marker_of = {i: p for i, p in zip((i for i, v in enumerate(series.values) if v is not None),
                                      points, strict=True)}  # fmt: skip
    _markers(out, series, taps, pitch, marker_of)
    # The first divergent tap of this metric, annotated.
    if first is not None and series.metric in first.failing:
        i = first.index
        if series.values[i] is not None and i in marker_of:
            _callout(out, series, first, frame, marker_of[i], points)


def _budget_zones(out: list[str], series: _Series, frame: _Frame) -> list[str]:
    """Over-budget zones (drawn now) and budget step paths (returned, drawn over the grid),
    one run per stretch of taps that have a budget."""
    xs, pitch, top = frame.xs, frame.pitch, frame.top
    runs: list[list[tuple[int, float]]] = []
    for i, budget in enumerate(series.budgets):
        if budget is None or budget <= 0 or not math.isfinite(budget):
            if runs and runs[-1]:
                runs.append([])
            continue
        if not runs:
            runs.append([])
        runs[-1].append((i, min(max(budget, frame.floor), 10.0**frame.hi)))
    steps = []
    for run in (r for r in runs if r):
        start = xs[run[0][0]] - pitch / 2
        zone = [f"M{_f(start)},{_f(top)}"]
        line = [f"M{_f(start)},{_f(frame.y(run[0][1]))}"]
        for i, budget in run:
            zone.append(f"V{_f(frame.y(budget))}H{_f(xs[i] + pitch / 2)}")
            line.append(f"V{_f(frame.y(budget))}H{_f(xs[i] + pitch / 2)}")
        zone.append(f"V{_f(top)}Z")
        out.append(f'<path class="zone" d="{"".join(zone)}"/>')
        steps.append("".join(line))
    return steps


def _markers(
    out: list[str],
    series: _Series,
    taps: Sequence[TapView],
    pitch: float,
    marker_of: Mapping[int, tuple[float, float, str]],
) -> None:
    """One marker per tap with a value: a circle, or a triangle at the floor or off the top."""
    for i, (px, py, kind) in marker_of.items():
        tap = taps[i]
        value = series.values[i]
        over = series.metric in tap.failing
        budget = series.budgets[i]
        tip = (
            f"{tap.name}: {series.short} {sci(value)}"
            f"{'' if budget is None else ' (budget ' + lim(budget) + ')'}"
            f"{' - over budget' if over else ''}"
            f"{' - drawn at the axis floor' if kind == 'floor' else ''}"
        )
        cls = "m fail" if over else "m ok"
        title = f"<title>{esc(tip)}</title>"
        data = f'data-tap="{esc(tap.name)}" data-metric="{series.metric}"'
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


def _callout(
    out: list[str],
    series: _Series,
    first: TapView,
    frame: _Frame,
    marker: tuple[float, float, str],
    points: Sequence[tuple[float, float, str]],
) -> None:
    """The first divergent tap's label, placed where it hides the fewest points."""
    px, py, _ = marker
    x0, x1, top, bottom = frame.x0, frame.x1, frame.top, frame.bottom
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
            f'text-anchor="{anchor}">{esc(text)}</text>'
        )


def _legend(out: list[str], lx: float) -> None:
    """The legend row above the panels, starting at ``lx``."""
    ly = 16.0
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
        out.append(f'<text class="leg" x="{_f(lx + 20)}" y="{_f(ly)}">{esc(text)}</text></g>')
        offset += 34 + len(text) * 6.6


def plot(check: CheckView, uid: str) -> str:
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
        f'<title id="{uid}-t">Per-layer error: {esc(check.label)}</title>',
        f'<desc id="{uid}-d">{esc(desc)}</desc>',
    ]
    _legend(out, x0)
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
            f'transform="rotate(-45 {_f(x + 3)} {_f(ty)})">{esc(name)}'
            f"<title>{esc(tap.name)} ({esc(tap.where)})</title></text>"
        )
    out.append(
        f'<text class="axis" x="{_f(x1)}" y="{_f(height - 6)}" text-anchor="end">'
        "taps in forward order →</text>"
    )
    out.append("</svg>")
    return "\n".join(out)
