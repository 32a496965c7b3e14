"""Small inline SVG charts for the report: no script, no font or file to fetch."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 760, 230
LEFT, RIGHT, TOP, BOTTOM = 62, 16, 14, 40
# One colour per line of the busiest-tenants chart (MAX_TENANT_LINES), none repeated.
COLORS = (
    "#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563",
)  # fmt: skip
LEGEND_STEP = 118  # px per legend entry
LEGEND_PER_ROW = (WIDTH - LEFT - RIGHT) // LEGEND_STEP
LEGEND_ROW = 14  # px per legend row


def legend_rows(entries: int) -> int:
    return max(1, math.ceil(entries / LEGEND_PER_ROW))


def _nice(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return float(next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= value))


def line_chart(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    *,
    unit: str,
    windows: Sequence[tuple[str, float, float]] = (),
    x_max: float | None = None,
    stacked: bool = False,
    x_unit: str = "s",
    markers: bool = False,
    y_max: float | None = None,
) -> Markup:
    """Lines (or stacked areas) over time in seconds; fault windows shaded and named. The
    legend wraps onto more rows rather than run past the chart's right edge."""
    x_max = x_max or (max(x) if x else 1.0) or 1.0
    values = [v for s in series.values() for v in s if v is not None]
    if stacked:
        values = [sum(s[i] or 0 for s in series.values()) for i in range(len(x))] or [0]
    y_max = y_max or _nice(max(values, default=1.0) * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    height = HEIGHT + (legend_rows(len(series)) - 1) * LEGEND_ROW

    def px(t: float) -> float:
        return LEFT + plot_w * min(max(t / x_max, 0), 1)

    def py(v: float) -> float:
        return TOP + plot_h * (1 - min(v / y_max, 1))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" class="chart">'
    ]
    for name, start, end in windows:
        parts.append(
            f'<rect x="{px(start):.1f}" y="{TOP}" width="{max(px(end) - px(start), 1):.1f}"'
            f' height="{plot_h}" fill="#f59e0b" fill-opacity="0.16"/>'
            f'<text x="{px(start) + 3:.1f}" y="{TOP + 11}" class="win">{escape(name)}</text>'
        )
    for i in range(5):
        value = y_max * i / 4
        y = py(value)
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'class="grid"/><text x="{LEFT - 6}" y="{y + 4:.1f}" class="ytick">'
            f"{value:,.4g}</text>"
        )
    digits = 0 if x_max >= 10 else 2
    for i in range(6):
        t = x_max * i / 5
        parts.append(
            f'<text x="{px(t):.1f}" y="{HEIGHT - BOTTOM + 16}" class="xtick">'
            f"{t:,.{digits}f}{escape(x_unit)}</text>"
        )
    parts.append(
        f'<text x="14" y="{TOP + plot_h / 2:.0f}" class="unit" transform="rotate(-90 14 '
        f'{TOP + plot_h / 2:.0f})">{escape(unit)}</text>'
    )
    base = [0.0] * len(x)
    for index, (name, values_) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        if stacked:
            top = [b + (v or 0) for b, v in zip(base, values_, strict=True)]
            if x:
                points = [f"{px(t):.1f},{py(v):.1f}" for t, v in zip(x, top, strict=True)]
                points += [
                    f"{px(t):.1f},{py(b):.1f}"
                    for t, b in zip(reversed(x), reversed(base), strict=True)
                ]
                parts.append(
                    f'<polygon points="{" ".join(points)}" fill="{color}" fill-opacity="0.75"/>'
                )
            base = top
        else:
            for run in _runs(x, values_):
                path = " ".join(f"{px(t):.1f},{py(v):.1f}" for t, v in run)
                parts.append(
                    f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6"/>'
                )
                if markers:
                    parts += [
                        f'<circle cx="{px(t):.1f}" cy="{py(v):.1f}" r="3" fill="{color}"/>'
                        for t, v in run
                    ]
        row, column = divmod(index, LEGEND_PER_ROW)
        x0, y0 = LEFT + 6 + column * LEGEND_STEP, HEIGHT - 14 + row * LEGEND_ROW
        parts.append(
            f'<rect x="{x0}" y="{y0}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x0 + 14}" y="{y0 + 9}" class="legend">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _runs(x: Sequence[float], values: Sequence[float | None]) -> list[list[tuple[float, float]]]:
    """Unbroken stretches of a series (a gap where there is no value)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in zip(x, values, strict=True):
        if v is None or not math.isfinite(v):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [r for r in runs if r]


def bar_pairs(rows: Sequence[tuple[str, float | None, float | None, str]], unit: str) -> Markup:
    """Horizontal bars: each row's candidate value, its baseline value when there is one, and
    a note beside the value (the change and the check's status); a regressed row is red."""
    height = 26 * len(rows) + 34
    values = [v for _, a, b, _ in rows for v in (a, b) if v is not None]
    top = _nice(max(values, default=1.0))
    label_w, plot_w = 150, WIDTH - 150 - 230
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" class="chart">'
    ]
    for i, (name, value, baseline, note) in enumerate(rows):
        y = 8 + i * 26
        parts.append(f'<text x="{label_w - 8}" y="{y + 14}" class="ylabel">{escape(name)}</text>')
        if value is not None:
            end = label_w + plot_w * value / top
            fill = REGRESSED if "regressed" in note else COLORS[0]
            parts.append(
                f'<rect x="{label_w}" y="{y + 2}" width="{end - label_w:.1f}" height="10" '
                f'fill="{fill}"/><text x="{end + 4:.1f}" y="{y + 11}" class="val">'
                f"{value:,.1f} {escape(unit)}{escape(note and ' · ' + note)}</text>"
            )
        if baseline is not None:
            parts.append(
                f'<rect x="{label_w}" y="{y + 13}" width="{plot_w * baseline / top:.1f}" '
                f'height="6" fill="#9ca3af"/>'
            )
    parts.append(
        f'<rect x="{label_w}" y="{height - 16}" width="10" height="10" fill="{COLORS[0]}"/>'
        f'<text x="{label_w + 14}" y="{height - 7}" class="legend">this run</text>'
        f'<rect x="{label_w + 90}" y="{height - 14}" width="10" height="6" fill="#9ca3af"/>'
        f'<text x="{label_w + 104}" y="{height - 7}" class="legend">baseline</text></svg>'
    )
    return Markup("".join(parts))


REGRESSED = "#dc2626"

KIND_COLORS = {
    "llm": "#7c3aed",
    "tool": "#2563eb",
    "retrieval": "#059669",
    "guardrail": "#d97706",
}


def waterfall(
    service_ms: float,
    bars: Sequence[tuple[str, str, float, float, bool]],
    windows: Sequence[tuple[str, float, float]] = (),
    injected: Sequence[float] = (),
) -> Markup:
    """One request on its own time line: a bar per step (label, kind, start, duration,
    failed), fault windows shaded, injected faults as red ticks. No script, no font."""
    label_w, right, row = 190, 70, 16
    plot_w = WIDTH - label_w - right
    height = 26 + row * (len(bars) + 1)
    top_ms = max([service_ms, *(s + d for _, _, s, d, _ in bars)], default=1.0) or 1.0

    def px(ms: float) -> float:
        return label_w + plot_w * min(max(ms / top_ms, 0.0), 1.0)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
        f'role="img" class="chart">'
    ]
    bottom = 10 + row * (len(bars) + 1)
    for name, start, end in windows:
        x0, x1 = px(start), px(end)
        parts.append(
            f'<rect x="{x0:.1f}" y="4" width="{max(x1 - x0, 1):.1f}" height="{bottom - 4}" '
            f'fill="#f59e0b" fill-opacity="0.16"/><text x="{x0 + 3:.1f}" y="{bottom + 12}" '
            f'class="win">{escape(name)}</text>'
        )
    parts.append(
        f'<text x="{label_w - 8}" y="{10 + 11}" class="ylabel">request</text>'
        f'<rect x="{label_w}" y="12" width="{px(service_ms) - label_w:.1f}" height="8" '
        f'fill="#9ca3af"/><text x="{px(service_ms) + 4:.1f}" y="20" class="val">'
        f"{service_ms:,.0f} ms</text>"
    )
    for i, (label, kind, start, duration, failed) in enumerate(bars, start=1):
        y = 10 + row * i
        color = "#dc2626" if failed else KIND_COLORS.get(kind, "#6b7280")
        x0 = px(start)
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 11}" class="ylabel">{escape(label[:28])}</text>'
            f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(px(start + duration) - x0, 1):.1f}" '
            f'height="10" fill="{color}"/>'
        )
    for at in injected:
        x = px(at)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="4" y2="{bottom}" stroke="#dc2626" '
            'stroke-width="1.5" stroke-dasharray="3 2"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
