"""Inline SVG charts for the HTML report: line charts, heat maps, scatter plots and bars (no script, no network)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT, PAD = 440, 260, 44
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) inside [low, high], about ``count`` of them."""
    if not math.isfinite(low) or not math.isfinite(high) or high <= low:
        return [low]
    raw = (high - low) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step - 1e-9)
    return [k * step for k in range(first, int(math.floor(high / step + 1e-9)) + 1)]


def _label(value: float, step: float) -> str:
    """A tick label with as many decimals as the tick spacing needs."""
    decimals = 0 if step <= 0 or not math.isfinite(step) else max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{min(decimals, 6)}f}" if abs(value) < 1e5 else f"{value:.3g}"


def _range(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    low, high = min(finite), max(finite)
    if high == low:
        return low - 0.5, high + 0.5
    margin = 0.05 * (high - low)
    return low - margin, high + margin


class _Frame:
    """Data coordinates to pixels inside the plotting area, and the axes drawn around it."""

    def __init__(self, xs: tuple[float, float], ys: tuple[float, float], xlabel: str, ylabel: str):
        self.xs, self.ys, self.xlabel, self.ylabel = xs, ys, xlabel, ylabel

    def x(self, value: float) -> float:
        return PAD + (value - self.xs[0]) / (self.xs[1] - self.xs[0]) * (WIDTH - 1.5 * PAD)

    def y(self, value: float) -> float:
        return HEIGHT - PAD - (value - self.ys[0]) / (self.ys[1] - self.ys[0]) * (HEIGHT - 1.5 * PAD)

    def axes(self, x_ticks: bool = True) -> str:
        parts = [f'<rect x="{PAD}" y="{PAD / 2}" width="{WIDTH - 1.5 * PAD}" height="{HEIGHT - 1.5 * PAD}" '
                 'fill="none" stroke="#999"/>']
        ys, xs = _ticks(*self.ys), _ticks(*self.xs)
        for value in ys:
            parts.append(f'<text x="{PAD - 4}" y="{self.y(value) + 4:.1f}" text-anchor="end">'
                         f'{_label(value, ys[1] - ys[0] if len(ys) > 1 else 0)}</text>')
        for value in xs if x_ticks else []:
            parts.append(f'<text x="{self.x(value):.1f}" y="{HEIGHT - PAD + 14}" text-anchor="middle">'
                         f'{_label(value, xs[1] - xs[0] if len(xs) > 1 else 0)}</text>')
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT - 6}" text-anchor="middle">{escape(self.xlabel)}</text>')
        parts.append(f'<text x="12" y="{HEIGHT / 2}" text-anchor="middle" transform="rotate(-90 12 {HEIGHT / 2})">'
                     f'{escape(self.ylabel)}</text>')
        return "".join(parts)


def _svg(body: str, width: float = WIDTH, height: float = HEIGHT, label: str = "") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(label)}" font-size="10" '
            f'font-family="sans-serif">{body}</svg>')


def line_chart(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str,
               mark_x: float | None = None, mark_label: str = "kept") -> str:
    """One polyline (with points) per named series; ``mark_x`` draws a dashed vertical line (the kept epoch)."""
    xs = [float(x) for xv, _ in series.values() for x in xv] + ([float(mark_x)] if mark_x is not None else [])
    ys = [float(y) for _, yv in series.values() for y in yv]
    frame = _Frame(_range(xs), _range(ys), xlabel, ylabel)
    parts = [frame.axes()]
    for k, (name, (xv, yv)) in enumerate(series.items()):
        colour = COLOURS[k % len(COLOURS)]
        points = [(frame.x(float(x)), frame.y(float(y))) for x, y in zip(xv, yv) if math.isfinite(float(y))]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                     + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + '"/>')
        parts += [f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{colour}"><title>{escape(name)} {y:.4g}'
                  f'</title></circle>' for (px, py), y in zip(points, [v for v in yv if math.isfinite(float(v))])]
        parts.append(f'<text x="{WIDTH - PAD}" y="{PAD / 2 + 14 + 12 * k}" text-anchor="end" fill="{colour}">'
                     f'{escape(name)}</text>')
    if mark_x is not None:
        px = frame.x(float(mark_x))
        parts.append(f'<line class="kept" x1="{px:.1f}" x2="{px:.1f}" y1="{PAD / 2}" y2="{HEIGHT - PAD}" '
                     f'stroke="#555" stroke-dasharray="4 3"/><text x="{px + 3:.1f}" y="{PAD / 2 + 10}">'
                     f'{escape(mark_label)}</text>')
    return _svg("".join(parts), label=ylabel)


def _shade(share: float) -> str:
    level = int(255 - 200 * min(max(share, 0.0), 1.0))
    return f"rgb({level},{level + (255 - level) // 3},255)"


def axis_labels(names: Sequence[str], width: int = 12) -> list[str]:
    """``names`` cut to ``width`` characters for an axis (a cut one ends in "…"); where two cut names read alike,
    each label starts with its class's number (1, 2, ...), so no two classes share one."""
    cut = [str(name) if len(str(name)) <= width else str(name)[:width - 1] + "…" for name in names]
    if len(set(cut)) == len(cut):
        return cut
    return [f"{k + 1} {str(name)[:width - 4] + '…' if len(str(name)) > width - 3 else name}"
            for k, name in enumerate(names)]


def heatmap(counts: Sequence[Sequence[float]], classes: Sequence[str], normalised: bool,
            cell_notes: dict[tuple[int, int], str] | None = None) -> str:
    """A confusion matrix (rows true, columns predicted): counts, or each row's shares; colour is the row share.
    ``cell_notes`` appear on hover (the cell's clips)."""
    matrix = np.asarray(counts, dtype=float)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(22, min(48, 360 // max(len(classes), 1)))
    left, top = 90, 64
    parts = []
    for i, j in np.ndindex(matrix.shape):
        x, y = left + j * size, top + i * size
        text = f"{share[i, j]:.2f}" if normalised else f"{int(matrix[i, j])}"
        note = (cell_notes or {}).get((i, j), "")
        tip = f"true {classes[i]}, predicted {classes[j]}: {int(matrix[i, j])} ({share[i, j]:.0%})" + \
            (f"\n{note}" if note else "")
        colour = "#fff" if share[i, j] > 0.6 else "#000"
        parts.append(f'<g class="cell"><title>{escape(tip)}</title><rect x="{x}" y="{y}" width="{size}" '
                     f'height="{size}" fill="{_shade(share[i, j])}" stroke="#fff"/><text x="{x + size / 2}" '
                     f'y="{y + size / 2 + 4}" text-anchor="middle" fill="{colour}">{text}</text></g>')
    for k, label in enumerate(map(escape, axis_labels(classes))):
        parts.append(f'<text x="{left - 4}" y="{top + k * size + size / 2 + 4}" text-anchor="end">{label}</text>')
        cx = left + k * size + size / 2
        parts.append(f'<text x="{cx}" y="{top - 6}" text-anchor="start" transform="rotate(-60 {cx} {top - 6})">'
                     f'{label}</text>')
    side = top + size * len(classes) + 24
    parts.append(f'<text x="{left + size * len(classes) / 2}" y="{side - 6}" text-anchor="middle">predicted</text>')
    parts.append(f'<text x="12" y="{top + size * len(classes) / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + size * len(classes) / 2})">true</text>')
    return _svg("".join(parts), left + size * len(classes) + 10, side, "confusion matrix")


def scatter(truth: Sequence[float], predicted: Sequence[float], label: str, names: Sequence[str] = ()) -> str:
    """Predicted against true values with the identity line; ``names`` appear on hover."""
    span = _range([*map(float, truth), *map(float, predicted)])
    frame = _Frame(span, span, f"true {label}", f"predicted {label}")
    parts = [frame.axes(), f'<line x1="{frame.x(span[0]):.1f}" y1="{frame.y(span[0]):.1f}" '
             f'x2="{frame.x(span[1]):.1f}" y2="{frame.y(span[1]):.1f}" stroke="#999" stroke-dasharray="4 3"/>']
    for k, (t, p) in enumerate(zip(truth, predicted)):
        tip = f"{names[k]}: " if k < len(names) else ""
        parts.append(f'<circle cx="{frame.x(float(t)):.1f}" cy="{frame.y(float(p)):.1f}" r="3" fill="{COLOURS[0]}" '
                     f'fill-opacity="0.6"><title>{escape(tip)}true {float(t):.4g}, predicted {float(p):.4g}'
                     '</title></circle>')
    return _svg("".join(parts), label=f"scatter {label}")


def bars(labels: Sequence[str], values: Sequence[float], ylabel: str,
         errors: Sequence[tuple[float, float] | None] = (), mean: float | None = None) -> str:
    """One bar per label (NaN: no bar), optional [low, high] whiskers and a dashed line at ``mean``."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    extra = [float(b) for e in errors if e for b in e if b is not None and math.isfinite(float(b))]
    low, high = _range([0.0, *finite, *extra])
    low = low if min([0.0, *finite, *extra]) < 0 else 0.0  # bars of values >= 0 stand on the axis
    frame = _Frame((0.0, float(max(len(labels), 1))), (low, high), "", ylabel)
    parts = [frame.axes(x_ticks=False)]
    width = (WIDTH - 1.5 * PAD) / max(len(labels), 1)
    for k, (name, value) in enumerate(zip(labels, values)):
        x = frame.x(float(k)) + 0.15 * width
        if value is not None and math.isfinite(float(value)):
            top, base = frame.y(float(value)), frame.y(0.0)
            parts.append(f'<rect class="bar" x="{x:.1f}" y="{min(top, base):.1f}" width="{0.7 * width:.1f}" '
                         f'height="{abs(base - top):.1f}" fill="{COLOURS[0]}"><title>{escape(str(name))}: '
                         f'{float(value):.4g}</title></rect>')
        error = errors[k] if k < len(errors) else None
        if error and all(e is not None for e in error):
            cx = x + 0.35 * width
            parts.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{frame.y(error[0]):.1f}" y2="{frame.y(error[1]):.1f}"'
                         ' stroke="#333"/>')
        parts.append(f'<text x="{x + 0.35 * width:.1f}" y="{HEIGHT - PAD + 14}" text-anchor="middle">'
                     f'{escape(str(name)[:10])}</text>')
    if mean is not None and math.isfinite(mean):
        parts.append(f'<line x1="{PAD}" x2="{WIDTH - PAD / 2}" y1="{frame.y(mean):.1f}" y2="{frame.y(mean):.1f}" '
                     f'stroke="#d62728" stroke-dasharray="4 3"><title>mean {mean:.4g}</title></line>')
    return _svg("".join(parts), label=ylabel)


def parallel_coordinates(axes: Sequence[str], lines: Sequence[Sequence[float | str]], colour_by: Sequence[float],
                         names: Sequence[str] = ()) -> str:
    """One vertical axis per column (text values spread evenly, numbers scaled to their range) and one polyline
    per row, darker for a larger ``colour_by`` value; ``names`` appear on hover."""
    width = max(WIDTH, 120 * len(axes))
    left, top, bottom = PAD, PAD / 2, HEIGHT - PAD
    columns: list[Sequence[float | str]] = list(zip(*lines)) if lines else [[] for _ in axes]

    def scale(values: Sequence[float | str]) -> list[float]:
        if all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in values):
            low, high = _range([float(v) for v in values])
            return [bottom - (float(v) - low) / (high - low) * (bottom - top) for v in values]
        levels = sorted({str(v) for v in values})
        return [bottom - (levels.index(str(v)) + 0.5) / len(levels) * (bottom - top) for v in values]

    ys = [scale(column) for column in columns]
    xs = [left + k * (width - 2 * left) / max(len(axes) - 1, 1) for k in range(len(axes))]
    shade_low, shade_high = _range([float(v) for v in colour_by]) if len(colour_by) else (0.0, 1.0)
    parts = []
    for row in range(len(lines)):
        value = float(colour_by[row])
        share = 0.25 + 0.75 * (value - shade_low) / (shade_high - shade_low) if math.isfinite(value) else 0.25
        tip = escape(names[row]) if row < len(names) else ""
        parts.append(f'<polyline class="trial" fill="none" stroke="{_shade(share)}" stroke-width="1.5" points="'
                     + " ".join(f"{x:.1f},{y[row]:.1f}" for x, y in zip(xs, ys)) + f'"><title>{tip}</title></polyline>')
    for x, name, column, y in zip(xs, axes, columns, ys):
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" stroke="#555"/><text x="{x:.1f}" '
                     f'y="{HEIGHT - PAD + 14}" text-anchor="middle">{escape(name)}</text>')
        if not column:
            continue
        if all(isinstance(v, (int, float)) for v in column):  # the axis's largest value on top, smallest below
            marks = {f"{max(map(float, column)):.3g}": min(y), f"{min(map(float, column)):.3g}": max(y)}
        else:
            marks = {str(v): position for v, position in zip(column, y)}
        parts += [f'<text class="value" x="{x + 3:.1f}" y="{position + 3:.1f}">{escape(label)}</text>'
                  for label, position in marks.items()]
    return _svg("".join(parts), width, HEIGHT, "parallel coordinates")
