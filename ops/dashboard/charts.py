"""Line charts as inline SVG, drawn on the server: no script, no CDN, nothing to download."""

from __future__ import annotations

import html
import time

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _nice(value: float) -> str:
    if value >= 100 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.2g}" if value < 1 else f"{value:.1f}"


def line_chart(
    series: dict[str, list[tuple[float, float]]],
    *,
    title: str,
    unit: str = "",
    testid: str = "",
    width: int = 560,
    height: int = 200,
) -> str:
    """``series``: name -> [(unix seconds, value)]. An SVG with axes, the latest value of each
    series in its legend, and a note when there is nothing to draw yet."""
    left, right, top, bottom = 56, 12, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for values in series.values() for p in values]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'data-testid="{html.escape(testid)}" aria-label="{html.escape(title)}" class="chart">',
        f'<text x="{left}" y="15" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>',
    ]
    if len(points) < 2:
        parts.append(
            f'<text x="{left + 8}" y="{top + plot_h / 2}" font-size="12" fill="#888">'
            "collecting: a point every few seconds</text></svg>"
        )
        return "".join(parts)
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    y_max = max(max(v for _, v in points), 1e-9)
    span = max(t1 - t0, 1.0)

    def x(t: float) -> float:
        return left + (t - t0) / span * plot_w

    def y(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    for fraction in (0.0, 0.5, 1.0):
        value = y_max * fraction
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#e4e4e4"/>'
            f'<text x="{left - 4}" y="{y(value) + 4:.1f}" font-size="10" text-anchor="end">'
            f"{_nice(value)}{html.escape(unit)}</text>"
        )
    for t, anchor in ((t0, "start"), (t1, "end")):
        parts.append(
            f'<text x="{x(t):.1f}" y="{top + plot_h + 14}" font-size="10" text-anchor="{anchor}">'
            f"{time.strftime('%H:%M:%S', time.localtime(t))}</text>"
        )
    legend_x = left
    for index, (name, values) in enumerate(sorted(series.items())):
        colour = COLOURS[index % len(COLOURS)]
        if values:
            path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in values)
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        latest = _nice(values[-1][1]) if values else "-"
        label = f"{name}: {latest}{unit}"
        parts.append(
            f'<rect x="{legend_x}" y="{height - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{legend_x + 14}" y="{height - 5}" font-size="11">{html.escape(label)}</text>'
        )
        legend_x += 24 + 7 * len(label)
    parts.append("</svg>")
    return "".join(parts)
