"""Line charts as inline SVG, drawn on the server: no script, no CDN, nothing to download.

A chart is a ``<figure>``: the SVG (a ``viewBox``, so the page's CSS stretches it to the width of its
column) and below it the legend as HTML, which wraps instead of being cut however long a series' name.
Numbers are written in human units (``human``): messages as ``1.2k``, rates as ``3/s``, seconds as
``125 ms`` or ``2.5 s``; zero is ``0`` in every unit. The value axis starts at zero and ends at a round
number (``axis_ticks``); a chart whose values are all zero still reads 0 … 1.
"""

from __future__ import annotations

import html
import math
import time
from typing import Literal

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
# the legend's swatches: classes, as the page allows no style attribute (its CSP); web.py adds them to its sheet
SWATCH_CSS = "".join(f".sw{i}{{background:{colour}}}" for i, colour in enumerate(COLOURS))

Unit = Literal["messages", "messages/s", "seconds"]


def _plain(value: float) -> str:
    """A number of at most three significant digits, without a trailing ``.0``."""
    if value >= 100:
        return f"{value:,.0f}"
    if value < 0.001:
        return "<0.001"  # never e-notation, and never 0 for what is not zero
    return f"{value:.3g}"


def human(value: float, unit: Unit) -> str:
    """``value`` as a person reads it: ``0``, ``12``, ``1.2k``, ``3/s``, ``0.5/s``, ``125 ms``, ``2.5 s``, ``3 min``."""
    if value == 0:
        return "0"
    if unit == "seconds":
        if value < 1:
            return f"{_plain(value * 1000)} ms"
        if value < 120:
            return f"{_plain(value)} s"
        if value < 7200:
            return f"{_plain(value / 60)} min"
        return f"{_plain(value / 3600)} h"
    if value >= 1_000_000:
        text = f"{_plain(value / 1_000_000)}M"
    elif value >= 10_000:
        text = f"{_plain(value / 1000)}k"
    else:
        text = _plain(value)
    return text + ("/s" if unit == "messages/s" else "")


def axis_ticks(top: float, unit: Unit) -> list[float]:
    """The value axis: from 0 to a round number at or above ``top``, in 2 to 5 equal steps of 1, 2 or 5 × 10ⁿ
    (whole steps for messages). All zero (or nothing): 0 … 1."""
    top = top if top > 0 else 1.0
    raw = top / 4
    step = 10 ** math.floor(math.log10(raw))
    for multiple in (1, 2, 5, 10):
        if raw <= step * multiple * (1 + 1e-9):
            step *= multiple
            break
    if unit == "messages":
        step = max(1.0, round(step))
    count = max(1, math.ceil(top / step - 1e-9))
    return [step * i for i in range(count + 1)]


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    unit: Unit,
    testid: str = "",
    width: int = 440,
    height: int = 200,
) -> str:
    """``series``: name -> [(unix seconds, value)]. A figure with the SVG (axes in ``unit``, times in UTC)
    and the legend (each series' latest value), or a note while there is nothing to draw yet."""
    left, right, top, bottom = 58, 12, 26, 30
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for values in series.values() for p in values]
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'data-testid="chart-svg" aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="16" font-size="14" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    legend: list[str] = []
    if len(points) < 2:
        svg.append(
            f'<text x="{left + 8}" y="{top + plot_h / 2}" font-size="13" fill="#777">'
            "collecting: a point at every look</text>"
        )
    else:
        t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
        ticks = axis_ticks(max(v for _, v in points), unit)
        y_max, span = ticks[-1], max(t1 - t0, 1.0)

        def x(t: float) -> float:
            return left + (t - t0) / span * plot_w

        def y(v: float) -> float:
            return top + plot_h - v / y_max * plot_h

        for value in ticks:
            svg.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" '
                f'stroke="{"#999" if value == 0 else "#e4e4e4"}"/>'
                f'<text x="{left - 5}" y="{y(value) + 4:.1f}" font-size="12" text-anchor="end" '
                f'data-testid="y-tick">{html.escape(human(value, unit))}</text>'
            )
        for t, anchor in ((t0, "start"), ((t0 + t1) / 2, "middle"), (t1, "end")):
            svg.append(
                f'<text x="{x(t):.1f}" y="{top + plot_h + 16}" font-size="12" text-anchor="{anchor}">'
                f"{time.strftime('%H:%M:%S', time.gmtime(t))}{' UTC' if anchor == 'end' else ''}</text>"
            )
        for index, (name, values) in enumerate(sorted(series.items())):
            colour = COLOURS[index % len(COLOURS)]
            if values:
                path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in values)
                svg.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
            latest = human(values[-1][1], unit) if values else "-"
            legend.append(
                f'<li data-testid="legend-item"><span class="sw sw{index % len(COLOURS)}"></span>'
                f"{html.escape(name)}: <b>{html.escape(latest)}</b></li>"
            )
    svg.append("</svg>")
    return (
        f'<figure class="chart" data-testid="{html.escape(testid)}">{"".join(svg)}'
        f'<ul class="legend">{"".join(legend)}</ul></figure>'
    )
