"""BENCHMARKS.md's charts: grouped bars of speed ratios as plain SVG (no plotting library), written by bench.report."""

from __future__ import annotations

from html import escape

COLOURS = ("#4C78A8", "#F58518", "#54A24B", "#B279A2", "#E45756", "#72B7B2", "#9D755D")
WIDTH, HEIGHT, LEFT, TOP, BOTTOM = 760, 300, 56, 40, 64


def bars(title: str, groups: dict[str, dict[str, float]], baseline: str, *, percent: bool = False) -> str:
    """An SVG of `groups` (x label -> series -> ratio), one bar per series in each group, with a dashed line at
    1.0x labelled `baseline` (what every ratio is measured against); `percent` writes the values as shares of it
    (0.57 as 57%) instead of ratios."""

    def shown(value: float) -> str:
        return f"{value * 100:.0f}%" if percent else f"{value:.2f}"

    series = list(dict.fromkeys(name for values in groups.values() for name in values))
    top = max([1.0, *(v for values in groups.values() for v in values.values())]) * 1.12
    places = _legend(series)
    height = HEIGHT + 16 * max(row for _, row in places.values())
    plot_w, plot_h = WIDTH - LEFT - 16, HEIGHT - TOP - BOTTOM
    group_w = plot_w / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
    ]
    for tick in _ticks(top):
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - 16}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_tick(tick, percent)}</text>')
    for g, (label, values) in enumerate(groups.items()):
        x0 = LEFT + g * group_w + group_w * 0.1
        for s, name in enumerate(series):
            if name not in values:
                continue
            value, x = values[name], x0 + s * bar_w
            out.append(
                f'<rect x="{x:.1f}" y="{y(value):.1f}" width="{bar_w - 2:.1f}" '
                f'height="{TOP + plot_h - y(value):.1f}" fill="{COLOURS[s % len(COLOURS)]}">'
                f"<title>{escape(name)}, {escape(label)}: {shown(value)}{'' if percent else 'x'}</title></rect>"
            )
            out.append(
                f'<text x="{x + (bar_w - 2) / 2:.1f}" y="{y(value) - 3:.1f}" text-anchor="middle" '
                f'font-size="9">{shown(value)}</text>'
            )
        out.append(
            f'<text x="{LEFT + (g + 0.5) * group_w:.1f}" y="{TOP + plot_h + 16}" '
            f'text-anchor="middle">{escape(label)}</text>'
        )
    out.append(
        f'<line x1="{LEFT}" x2="{WIDTH - 16}" y1="{y(1):.1f}" y2="{y(1):.1f}" stroke="#333" stroke-dasharray="4 3"/>'
    )
    out.append(
        f'<text x="{WIDTH / 2}" y="33" text-anchor="middle" fill="#555">dashed line: '
        f"{'100%' if percent else '1.0x'} = {escape(baseline)}</text>"
    )
    for s, name in enumerate(series):
        x, row = places[name]
        top = HEIGHT - 22 + 16 * row
        out.append(f'<rect x="{x:.1f}" y="{top}" width="10" height="10" fill="{COLOURS[s % len(COLOURS)]}"/>')
        out.append(f'<text x="{x + 14:.1f}" y="{top + 9}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _legend(series: list[str], char_w: float = 6.2) -> dict[str, tuple[float, int]]:
    """Where each legend entry goes (x, row): one after the other by the width of its name (11 px sans-serif
    is about 6.2 px a character), on a new row where the next would pass the right edge."""
    places, x, row = {}, float(LEFT), 0
    for name in series:
        width = 14 + len(name) * char_w + 18
        if x + width > WIDTH - 8 and x > LEFT:
            x, row = float(LEFT), row + 1
        places[name] = (x, row)
        x += width
    return places


def _tick(value: float, percent: bool) -> str:
    return f"{value * 100:.0f}%" if percent else f"{value:g}x"


def _ticks(top: float) -> list[float]:
    step = next(s for s in (0.25, 0.5, 1, 2, 5, 10, 20) if top / s <= 8)
    return [i * step for i in range(int(top / step) + 1)]
