"""Charts as SVG written on the server: bars (vertical, or horizontal for long labels) and columns over
time. No library and no script: the page shows them as they are, a screen reader gets the chart's
``<title>`` and ``<desc>`` and each bar's own ``<title>``, and the fixed viewBox scales to the width.

Values are numbers (money in minor units, counts); ``fmt`` writes an axis label or a bar's value the way
the page wants (money in the reader's locale). Negative values (refunds) hang below the zero line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence
from xml.sax.saxutils import escape

from markupsafe import Markup

WIDTH = 640  # viewBox units; the SVG itself is 100% wide
TICKS = 5


@dataclass(frozen=True)
class Bar:
    label: str
    value: int | float
    tick: str | None = None  # a shorter label under a vertical bar (a date without its year)


def nice_step(span: float, ticks: int = TICKS, whole: bool = True) -> float:
    """The step of 1, 2 or 5 × 10^n that cuts ``span`` into at most ``ticks`` intervals (whole: at least 1)."""
    if span <= 0:
        return 1
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw - 1e-12:
            step = m * power
            break
    if whole:
        step = max(1, round(step))
    return step


def nice_ticks(low: float, high: float, ticks: int = TICKS, whole: bool = True) -> list:
    """Axis ticks at a nice step covering [min(low, 0), max(high, 0)], zero always among them; with
    nothing to show (all zero), 0 and 1."""
    low, high = min(low, 0), max(high, 0)
    if low == high:
        return [0, 1]
    step = nice_step(high - low, ticks, whole)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    values = [i * step for i in range(first, last + 1)]
    return [int(round(v)) if whole or float(v).is_integer() else round(v, 10) for v in values]


def _text(x, y, s: str, anchor: str = "middle", cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{klass}>{escape(s)}</text>'


def _frame(title: str, desc: str, height: float, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
        f'preserveAspectRatio="xMinYMin meet" width="100%">'
        f'<title>{escape(title)}</title><desc>{escape(desc)}</desc>' + "".join(body) + "</svg>")


def _empty(title: str, desc: str, message: str) -> Markup:
    return _frame(title, desc, 80, [_text(WIDTH / 2, 45, message, cls="empty")])


def bar_chart(bars: Sequence[Bar], title: str, desc: str, fmt: Callable = str, horizontal: bool = False,
              empty: str = "No data", label_every: int = 1, whole: bool = True) -> Markup:
    """Bars of ``bars``: vertical with the labels under them, or horizontal with the labels on the left
    (for names of machines and products); ``label_every`` shows only every n-th label under vertical bars
    (a long time series)."""
    if not bars:
        return _empty(title, desc, empty)
    ticks = nice_ticks(min(b.value for b in bars), max(b.value for b in bars), whole=whole)
    return (_horizontal if horizontal else _vertical)(bars, ticks, title, desc, fmt, label_every)


def _vertical(bars, ticks, title, desc, fmt, label_every) -> Markup:
    left, right, top, plot_h = 78, 10, 12, 220
    height = top + plot_h + 40
    plot_w = WIDTH - left - right
    lo, hi = ticks[0], ticks[-1]
    scale = plot_h / (hi - lo)
    zero_y = top + hi * scale
    body = ['<g class="axis">']
    for t in ticks:
        y = top + (hi - t) * scale
        body.append(f'<line class="grid" x1="{left}" x2="{WIDTH - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(_text(left - 6, y + 4, fmt(t), "end"))
    body.append("</g>")
    slot = plot_w / len(bars)
    width = max(slot * 0.7, 1)
    for i, b in enumerate(bars):
        h = abs(b.value) * scale
        y = zero_y - h if b.value >= 0 else zero_y
        x = left + i * slot + (slot - width) / 2
        body.append(f'<rect class="bar{" negative" if b.value < 0 else ""}" x="{x:.2f}" y="{y:.2f}" '
                    f'width="{width:.2f}" height="{h:.2f}" data-value="{b.value}">'
                    f'<title>{escape(b.label)}: {escape(fmt(b.value))}</title></rect>')
        if i % label_every == 0:
            body.append(_text(x + width / 2, top + plot_h + 16, b.tick or b.label))
    body.append(f'<line class="zero" x1="{left}" x2="{WIDTH - right}" y1="{zero_y:.2f}" y2="{zero_y:.2f}"/>')
    return _frame(title, desc, height, body)


def _horizontal(bars, ticks, title, desc, fmt, label_every) -> Markup:
    left, right, top, row = 170, 40, 8, 26
    plot_h = row * len(bars)
    height = top + plot_h + 26
    plot_w = WIDTH - left - right
    lo, hi = ticks[0], ticks[-1]
    scale = plot_w / (hi - lo)
    zero_x = left - lo * scale
    body = ['<g class="axis">']
    for t in ticks:
        x = left + (t - lo) * scale
        body.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}"/>')
        body.append(_text(x, top + plot_h + 18, fmt(t)))
    body.append("</g>")
    for i, b in enumerate(bars):
        w = abs(b.value) * scale
        x = zero_x if b.value >= 0 else zero_x - w
        y = top + i * row + 4
        label = b.label if len(b.label) <= 26 else b.label[:25] + "…"
        body.append(_text(left - 6, y + 13, label, "end"))
        body.append(f'<rect class="bar{" negative" if b.value < 0 else ""}" x="{x:.2f}" y="{y:.2f}" '
                    f'width="{w:.2f}" height="{row - 8}" data-value="{b.value}">'
                    f'<title>{escape(b.label)}: {escape(fmt(b.value))}</title></rect>')
    body.append(f'<line class="zero" x1="{zero_x:.1f}" x2="{zero_x:.1f}" y1="{top}" y2="{top + plot_h}"/>')
    return _frame(title, desc, height, body)

