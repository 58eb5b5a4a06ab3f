"""Hand-made inline SVG plots: small, no JavaScript library, readable on a phone.

Each function returns one `<svg>` element as a string, sized by its viewBox so it scales to the page
width. Every mark carries a `<title>`, which a browser shows on hover; the HTML page adds a tap
handler that prints the same text under the plot for touch screens. The same strings are written
as standalone `.svg` files for report.md and the bundle's model card, so they must not rely on the
page's CSS: colours and fonts are set on the elements themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

FONT = "font-family='system-ui,-apple-system,Segoe UI,Roboto,sans-serif'"
KIND_STYLE = {  # fill, stroke, radius: what a point is reads before its label does
    "candidate": ("#2563eb", "#1e3a8a", 6.5),
    "chosen": ("#16a34a", "#14532d", 7.5),
    "trial": ("#93c5fd", "#3b82f6", 4.5),
    "baseline": ("#f59e0b", "#92400e", 6.5),
    "peer": ("#a3a3a3", "#404040", 5.5),
}


@dataclass(frozen=True)
class Point:
    """One model on a plot; `x_err`/`y_err` are (low, high) interval ends, drawn as whiskers."""

    label: str
    x: float
    y: float
    kind: str = "candidate"  # candidate | chosen | trial | baseline | peer
    tooltip: str = ""
    x_err: tuple[float, float] | None = None
    y_err: tuple[float, float] | None = None


@dataclass(frozen=True)
class Distribution:
    """A model's latency distribution as its whole percentiles 0..100 (LatencyStats.quantiles_ms)."""

    label: str
    quantiles_ms: Sequence[float]
    p50_ci_ms: tuple[float, float] | None = None
    tooltip: str = ""
    kind: str = "candidate"


@dataclass(frozen=True)
class Bar:
    label: str
    value: float
    kind: str = "candidate"
    tooltip: str = ""


@dataclass
class _Frame:
    """Maps data to pixels inside the plot area; knows its ticks."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width: int
    height: int
    left: int = 64
    right: int = 18
    top: int = 34
    bottom: int = 52
    x_ticks: list[float] = field(default_factory=list)
    y_ticks: list[float] = field(default_factory=list)

    def px(self, x: float) -> float:
        low, high = self.x_range
        return self.left + (x - low) / (high - low) * (self.width - self.left - self.right)

    def py(self, y: float) -> float:
        low, high = self.y_range
        return self.height - self.bottom - (y - low) / (high - low) * (self.height - self.top - self.bottom)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def _padded(values: Sequence[float], pad: float = 0.08, include_zero: bool = False) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
    low, high = min(finite), max(finite)
    if include_zero:
        low, high = min(low, 0.0), max(high, 0.0)
    span = high - low or max(abs(high), 1.0) * 0.5
    return low - span * pad, high + span * pad


def _fmt_tick(value: float) -> str:
    return f"{value:g}" if abs(value) >= 0.01 or value == 0 else f"{value:.1e}"


def _open_svg(width: int, height: int, title: str, css_class: str) -> list[str]:
    return [f"<svg xmlns='http://www.w3.org/2000/svg' class='plot {css_class}' viewBox='0 0 {width} {height}' "
            f"width='{width}' height='{height}' role='img' aria-label='{escape(title)}' {FONT}>",
            f"<rect x='0' y='0' width='{width}' height='{height}' fill='#ffffff'/>",
            f"<text x='{width / 2:.0f}' y='20' text-anchor='middle' font-size='14' font-weight='600' "
            f"fill='#111827'>{escape(title)}</text>"]


def _axes(frame: _Frame, x_label: str, y_label: str, y_ticks: bool = True) -> list[str]:
    parts = []
    for tick in frame.x_ticks:
        x = frame.px(tick)
        parts.append(f"<line x1='{x:.1f}' y1='{frame.top}' x2='{x:.1f}' y2='{frame.height - frame.bottom}' "
                     "stroke='#e5e7eb'/>")
        parts.append(f"<text x='{x:.1f}' y='{frame.height - frame.bottom + 16}' text-anchor='middle' "
                     f"font-size='11' fill='#374151'>{_fmt_tick(tick)}</text>")
    for tick in frame.y_ticks if y_ticks else []:
        y = frame.py(tick)
        parts.append(f"<line x1='{frame.left}' y1='{y:.1f}' x2='{frame.width - frame.right}' y2='{y:.1f}' "
                     "stroke='#e5e7eb'/>")
        parts.append(f"<text x='{frame.left - 6}' y='{y + 4:.1f}' text-anchor='end' font-size='11' "
                     f"fill='#374151'>{_fmt_tick(tick)}</text>")
    bottom, right = frame.height - frame.bottom, frame.width - frame.right
    parts.append(f"<polyline points='{frame.left},{frame.top} {frame.left},{bottom} {right},{bottom}' "
                 "fill='none' stroke='#6b7280'/>")
    parts.append(f"<text x='{(frame.left + right) / 2:.0f}' y='{frame.height - 12}' text-anchor='middle' "
                 f"font-size='12' fill='#111827'>{escape(x_label)}</text>")
    if y_label:
        mid = (frame.top + bottom) / 2
        parts.append(f"<text x='14' y='{mid:.0f}' transform='rotate(-90 14 {mid:.0f})' text-anchor='middle' "
                     f"font-size='12' fill='#111827'>{escape(y_label)}</text>")
    return parts


def _marker(point: Point, x: float, y: float) -> str:
    fill, stroke, radius = KIND_STYLE.get(point.kind, KIND_STYLE["candidate"])
    if point.kind in ("baseline", "peer"):  # reference points are diamonds: not candidates to pick
        r = radius * 1.2
        return (f"<polygon points='{x:.1f},{y - r:.1f} {x + r:.1f},{y:.1f} {x:.1f},{y + r:.1f} {x - r:.1f},{y:.1f}' "
                f"fill='{fill}' stroke='{stroke}' stroke-width='1.5'/>")
    return f"<circle cx='{x:.1f}' cy='{y:.1f}' r='{radius}' fill='{fill}' stroke='{stroke}' stroke-width='1.5'/>"


def scatter_svg(points: Sequence[Point], *, front: Sequence[Point] | None = None,
                reference_points: Sequence[Point] = (), x_label: str = "latency p50 (ms)",
                y_label: str = "accuracy drop vs fp32 (pt)", title: str = "Accuracy drop vs latency",
                x_limit: float | None = None, y_limit: float | None = None, label_points: bool = True,
                width: int = 640, height: int = 400) -> str:
    """Candidates (`points`) against reference points (baseline, peers), lower-left is better.

    `front`: the Pareto-optimal points, joined by a step line; `x_limit`/`y_limit`: budget lines. Every
    mark has a `<title>` (hover) and the `pt` class with a `data-tip` (tap, in the HTML report).
    """
    everything = [*points, *reference_points]
    xs = [v for p in everything for v in (p.x, *(p.x_err or ()))]
    ys = [v for p in everything for v in (p.y, *(p.y_err or ()))]
    x_limit, x_off = _on_scale(x_limit, xs)
    y_limit, y_off = _on_scale(y_limit, ys)
    x_range = _padded(xs + ([x_limit] if x_limit is not None else []), include_zero=True)
    y_range = _padded(ys + ([y_limit] if y_limit is not None else []))
    frame = _Frame(x_range, y_range, width, height, top=52)
    frame.x_ticks = [t for t in nice_ticks(*x_range) if x_range[0] <= t <= x_range[1]]
    frame.y_ticks = [t for t in nice_ticks(*y_range) if y_range[0] <= t <= y_range[1]]
    parts = _open_svg(width, height, title, "scatter")
    parts += _axes(frame, x_label, y_label)
    right, bottom = width - frame.right, height - frame.bottom
    if x_limit is not None:
        x = frame.px(x_limit)
        parts.append(f"<g class='limit'><title>budget: {escape(x_label)} max {x_limit:g}</title>"
                     f"<line x1='{x:.1f}' y1='{frame.top}' x2='{x:.1f}' y2='{bottom}' stroke='#dc2626' "
                     "stroke-dasharray='6 4'/></g>")
    if y_limit is not None:
        y = frame.py(y_limit)
        parts.append(f"<g class='limit'><title>budget: {escape(y_label)} max {y_limit:g}</title>"
                     f"<line x1='{frame.left}' y1='{y:.1f}' x2='{right}' y2='{y:.1f}' stroke='#dc2626' "
                     "stroke-dasharray='6 4'/></g>")
    off_scale = [f"{name} budget {value:g} is off the chart" for name, value in (("x", x_off), ("y", y_off))
                 if value is not None]
    if off_scale:
        parts.append(f"<text x='{right - 4}' y='{frame.top + 12}' text-anchor='end' font-size='10' "
                     f"fill='#dc2626'>{escape('; '.join(off_scale))}</text>")
    if front:
        ordered = sorted(front, key=lambda p: p.x)
        steps = []
        for index, point in enumerate(ordered):
            if index:
                steps.append(f"{frame.px(point.x):.1f},{frame.py(ordered[index - 1].y):.1f}")
            steps.append(f"{frame.px(point.x):.1f},{frame.py(point.y):.1f}")
        parts.append(f"<g class='front'><title>Pareto front ({len(ordered)} points)</title><polyline "
                     f"points='{' '.join(steps)}' fill='none' stroke='#16a34a' stroke-width='2'/></g>")
    for point in [*reference_points, *points]:
        x, y = frame.px(point.x), frame.py(point.y)
        tip = escape(point.tooltip or f"{point.label}: {point.x:.3g}, {point.y:.3g}")
        mark = [f"<g class='pt {escape(point.kind)}' data-tip='{tip}'><title>{tip}</title>"]
        if point.x_err:
            mark.append(f"<line x1='{frame.px(point.x_err[0]):.1f}' y1='{y:.1f}' x2='{frame.px(point.x_err[1]):.1f}' "
                        f"y2='{y:.1f}' stroke='#374151' stroke-width='1.5'/>")
        if point.y_err:
            mark.append(f"<line x1='{x:.1f}' y1='{frame.py(point.y_err[0]):.1f}' x2='{x:.1f}' "
                        f"y2='{frame.py(point.y_err[1]):.1f}' stroke='#374151' stroke-width='1.5'/>")
        mark.append(_marker(point, x, y))
        if label_points and point.kind != "trial":
            anchor = "end" if x > width * 0.7 else "start"
            dx = -10 if anchor == "end" else 10
            dy = 18 if point.kind in ("baseline", "peer") else -8  # references below, candidates above
            mark.append(f"<text x='{x + dx:.1f}' y='{y + dy:.1f}' text-anchor='{anchor}' font-size='11' "
                        f"fill='#111827'>{escape(point.label)}</text>")
        parts.append("".join(mark) + "</g>")
    parts.append(_legend(sorted({p.kind for p in everything}, key=list(KIND_STYLE).index), width, bool(front)))
    parts.append("</svg>")
    return "\n".join(parts)


def _on_scale(limit: float | None, values: Sequence[float]) -> tuple[float | None, float | None]:
    """(limit to draw, limit that is off the chart): a budget ten spans away would flatten the data."""
    if limit is None or not values:
        return limit, None
    low, high = min(values), max(values)
    span = max(high - low, abs(high) * 0.1, 1e-9)
    return (limit, None) if low - 2 * span <= limit <= high + 2 * span else (None, limit)


def _legend(kinds: list[str], width: int, has_front: bool) -> str:
    names = {"candidate": "candidate", "chosen": "chosen", "trial": "trial", "baseline": "fp32 baseline",
             "peer": "reference"}
    items, x = [], width - 8
    entries = [(names[k], k) for k in kinds] + ([("Pareto front", "front")] if has_front else [])
    for text, kind in reversed(entries):
        x -= 7 * len(text) + 22
        if kind == "front":
            swatch = f"<line x1='{x}' y1='38' x2='{x + 12}' y2='38' stroke='#16a34a' stroke-width='2'/>"
        else:
            swatch = _marker(Point("", 0, 0, kind), x + 6, 38)
        items.append(f"{swatch}<text x='{x + 16}' y='42' font-size='11' fill='#374151'>{escape(text)}</text>")
    return "<g class='legend'>" + "".join(items) + "</g>"


def _density(quantiles: Sequence[float], grid: Sequence[float]) -> list[float]:
    """Density on `grid` from the quantile function: d(percentile)/d(ms), the CDF's slope between points."""
    qs = list(quantiles)
    cdf = []
    for value in grid:
        if value <= qs[0]:
            cdf.append(0.0)
        elif value >= qs[-1]:
            cdf.append(1.0)
        else:
            i = next(k for k in range(1, len(qs)) if qs[k] >= value)
            span = qs[i] - qs[i - 1]
            cdf.append((i - 1 + (value - qs[i - 1]) / span) / (len(qs) - 1) if span > 0 else (i - 1) / (len(qs) - 1))
    return [max(cdf[i + 1] - cdf[i], 0.0) for i in range(len(grid) - 1)]


def distribution_svg(series: Sequence[Distribution], *, title: str = "Latency distribution (per iteration)",
                     x_label: str = "latency (ms)", width: int = 640, clip_percentile: int = 95) -> str:
    """One violin per model on a shared axis, with its median and the median's 95% CI.

    The axis stops at 1.5x the largest `clip_percentile` so a few slow outliers (another process on the
    machine) do not flatten every shape; a row whose tail goes further says so at the right edge, and each
    tooltip gives p99 and the maximum.
    """
    usable = [s for s in series if s.quantiles_ms and len(s.quantiles_ms) == 101]
    row_h = 56
    height = 34 + 52 + row_h * max(len(usable), 1)
    low = min((s.quantiles_ms[0] for s in usable), default=0.0)
    high = min(max((s.quantiles_ms[clip_percentile] for s in usable), default=1.0) * 1.5,
               max((s.quantiles_ms[100] for s in usable), default=1.0))
    x_range = _padded([low, high], pad=0.04)
    frame = _Frame(x_range, (0.0, 1.0), width, height, left=150)
    frame.x_ticks = [t for t in nice_ticks(*x_range) if x_range[0] <= t <= x_range[1]]
    parts = _open_svg(width, height, title, "distribution")
    parts += _axes(frame, x_label, "", y_ticks=False)
    steps = 60
    grid = [x_range[0] + (x_range[1] - x_range[0]) * i / steps for i in range(steps + 1)]
    for row, item in enumerate(usable):
        centre = frame.top + row_h * row + row_h / 2
        density = _density(item.quantiles_ms, grid)
        peak = max(density) or 1.0
        inside = [i for i in range(steps) if grid[i + 1] >= item.quantiles_ms[0] and grid[i] <= item.quantiles_ms[-1]]
        half = [density[i] / peak * (row_h * 0.42) for i in inside]
        mids = [frame.px(min(max((grid[i] + grid[i + 1]) / 2, item.quantiles_ms[0]), item.quantiles_ms[-1]))
                for i in inside]
        upper = " ".join(f"{x:.1f},{centre - h:.1f}" for x, h in zip(mids, half, strict=True))
        lower = " ".join(f"{x:.1f},{centre + h:.1f}" for x, h in zip(reversed(mids), reversed(half), strict=True))
        fill, stroke, _ = KIND_STYLE.get(item.kind, KIND_STYLE["candidate"])
        q = item.quantiles_ms
        tip = escape(item.tooltip or f"{item.label}: p50 {q[50]:.3g} ms, p95 {q[95]:.3g}, p99 {q[99]:.3g}, "
                                     f"max {q[100]:.3g} ms")
        mark = [f"<g class='pt {escape(item.kind)}' data-tip='{tip}'><title>{tip}</title>",
                f"<polygon points='{upper} {lower}' fill='{fill}' fill-opacity='0.45' stroke='{stroke}'/>"]
        if item.p50_ci_ms:
            mark.append(f"<line x1='{frame.px(item.p50_ci_ms[0]):.1f}' y1='{centre:.1f}' "
                        f"x2='{frame.px(item.p50_ci_ms[1]):.1f}' y2='{centre:.1f}' stroke='#111827' stroke-width='3'/>")
        x50 = frame.px(q[50])
        mark.append(f"<line x1='{x50:.1f}' y1='{centre - row_h * 0.42:.1f}' x2='{x50:.1f}' "
                    f"y2='{centre + row_h * 0.42:.1f}' stroke='#111827' stroke-width='2'/>")
        mark.append(f"<text x='{frame.left - 8}' y='{centre + 4:.1f}' text-anchor='end' font-size='11' "
                    f"fill='#111827'>{escape(_short(item.label, 22))}</text>")
        if q[100] > x_range[1]:
            mark.append(f"<text x='{width - frame.right:.1f}' y='{centre - row_h * 0.3:.1f}' text-anchor='end' "
                        f"font-size='10' fill='#6b7280'>tail to {q[100]:.3g} ms &#8594;</text>")
        parts.append("".join(mark) + "</g>")
    if not usable:
        parts.append(f"<text x='{width / 2:.0f}' y='{height / 2:.0f}' text-anchor='middle' font-size='12' "
                     "fill='#6b7280'>no per-iteration distribution recorded (report from an older slimline)</text>")
    parts.append("</svg>")
    return "\n".join(parts)


def bar_svg(bars: Sequence[Bar], *, title: str, unit: str, limit: float | None = None, width: int = 640) -> str:
    """Horizontal bars (e.g. size on disk per model) with an optional budget line."""
    row_h = 30
    height = 34 + 52 + row_h * max(len(bars), 1)
    x_range = (0.0, _padded([b.value for b in bars] + ([limit] if limit is not None else []), pad=0.1)[1])
    frame = _Frame(x_range, (0.0, 1.0), width, height, left=150)
    frame.x_ticks = [t for t in nice_ticks(*x_range) if t <= x_range[1]]
    parts = _open_svg(width, height, title, "bars")
    parts += _axes(frame, unit, "", y_ticks=False)
    for row, bar in enumerate(bars):
        y = frame.top + row_h * row + 5
        fill, stroke, _ = KIND_STYLE.get(bar.kind, KIND_STYLE["candidate"])
        tip = escape(bar.tooltip or f"{bar.label}: {bar.value:.3g} {unit}")
        parts.append(f"<g class='pt {escape(bar.kind)}' data-tip='{tip}'><title>{tip}</title>"
                     f"<rect x='{frame.left}' y='{y}' width='{max(frame.px(bar.value) - frame.left, 1):.1f}' "
                     f"height='{row_h - 10}' fill='{fill}' stroke='{stroke}'/>"
                     f"<text x='{frame.left - 8}' y='{y + row_h / 2:.0f}' text-anchor='end' font-size='11' "
                     f"fill='#111827'>{escape(_short(bar.label, 22))}</text>"
                     f"<text x='{frame.px(bar.value) + 4:.1f}' y='{y + row_h / 2:.0f}' font-size='11' "
                     f"fill='#374151'>{bar.value:.3g}</text></g>")
    if limit is not None:
        x = frame.px(limit)
        parts.append(f"<g class='limit'><title>budget: max {limit:g} {escape(unit)}</title><line x1='{x:.1f}' "
                     f"y1='{frame.top}' x2='{x:.1f}' y2='{height - frame.bottom}' stroke='#dc2626' "
                     "stroke-dasharray='6 4'/></g>")
    parts.append("</svg>")
    return "\n".join(parts)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both x and y (lower is better on both)."""
    front = []
    for point in points:
        dominated = any(o.x <= point.x and o.y <= point.y and (o.x < point.x or o.y < point.y) for o in points)
        if not dominated:
            front.append(point)
    return sorted(front, key=lambda p: p.x)
