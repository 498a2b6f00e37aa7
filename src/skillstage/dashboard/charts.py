"""Line charts as inline SVG, drawn on the server: no script, nothing fetched at run time.

Each chart carries the numbers it plots: the `<svg>` has a `<title>`; each line is a `<g>` with
`data-series`, `data-count` and `data-mean` (the figure over all of the series' executions); each
point is a `<circle>` with `data-x` (ISO time), `data-y` (the value) and `data-count`, and a
`<title>` a person sees on hover. A test (or a reader with the page's source) can check every
number against the store.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 240
MARGIN_LEFT = 56
MARGIN_RIGHT = 16
MARGIN_TOP = 28
MARGIN_BOTTOM = 36
# Colour-blind-safe (Okabe-Ito), in order of the series.
COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#000000")
DASHES = ("", "6 3", "2 3")
TIMELINE_WIDTH = 1200  # about as wide as the page, so its labels keep their size


@dataclass(frozen=True)
class Line:
    """One series: its points (time, value, executions behind the value) and its overall figure."""

    label: str
    points: Sequence[tuple[dt.datetime, float, int]]
    count: int
    mean: float | None
    colour: int = 0  # index into COLOURS
    dash: int = 0  # index into DASHES


def _number(value: float) -> str:
    """A value as the data attributes carry it: exact enough to compare, no float noise."""
    return f"{value:.6g}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2 or 5 times a power of ten apart)."""
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    ticks = [round(math.floor(low / step) * step, 10)]
    while ticks[-1] < high - step * 1e-9:  # the last tick at or above the highest value
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _time_label(at: dt.datetime, span: dt.timedelta) -> str:
    if span <= dt.timedelta(hours=1):
        return at.strftime("%H:%M:%S")
    if span <= dt.timedelta(days=2):
        return at.strftime("%m-%d %H:%M")
    return at.strftime("%Y-%m-%d")


def line_chart(
    title: str,
    lines: Sequence[Line],
    *,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    y_format: Callable[[float], str] = lambda v: f"{v:g}",
    chart_id: str = "",
) -> Markup:
    """An SVG line chart of `lines` over time, with axes, tick labels, a legend and a title."""
    plotted = [line for line in lines if line.points]
    times = [p[0] for line in plotted for p in line.points]
    values = [p[1] for line in plotted for p in line.points]
    attrs = f' id="{escape(chart_id)}"' if chart_id else ""
    head = (
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" data-chart="{escape(title)}"'
        f"{attrs}><title>{escape(title)}</title>"
    )
    if not plotted:
        return Markup(
            head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
            'class="empty">no executions recorded</text></svg>'
        )
    low, high = y_range if y_range else (min(values), max(values))
    if not y_range:
        low = min(0.0, low)
    ticks = nice_ticks(low, high)
    low, high = min(ticks[0], low), max(ticks[-1], high)
    start, end = min(times), max(times)
    span = end - start
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    # The legend above the plot, in as many rows as its entries need.
    legend: list[tuple[float, float, Line]] = []
    cursor, row = float(left), 0
    for line in plotted:
        size = 30 + 6.5 * len(line.label)
        if cursor + size > right and cursor > left:
            cursor, row = float(left), row + 1
        legend.append((cursor, 12.0 + 14 * row, line))
        cursor += size
    top, bottom = MARGIN_TOP + 14 * row, HEIGHT - MARGIN_BOTTOM

    def x(at: dt.datetime) -> float:
        if span.total_seconds() <= 0:
            return (left + right) / 2
        return left + (right - left) * ((at - start) / span)

    def y(value: float) -> float:
        return bottom - (bottom - top) * ((value - low) / (high - low or 1.0))

    parts = [head]
    # Axes and grid.
    parts.append(
        f'<g class="axes"><line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/></g>'
    )
    parts.append('<g class="y-ticks">')
    for tick in ticks:
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{left}" y1="{ty:.1f}" x2="{right}" y2="{ty:.1f}"/>'
            f'<text x="{left - 6}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{escape(y_format(tick))}</text>"
        )
    parts.append("</g>")
    parts.append(
        f'<text class="axis-label" transform="translate(14 {(top + bottom) / 2}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    parts.append('<g class="x-ticks">')
    x_ticks = [start] if span.total_seconds() <= 0 else [start, start + span / 2, end]
    for index, at in enumerate(x_ticks):
        anchor = ("start", "middle", "end")[index] if len(x_ticks) == 3 else "middle"
        parts.append(
            f'<text x="{x(at):.1f}" y="{bottom + 16}" text-anchor="{anchor}">'
            f"{escape(_time_label(at, span))}</text>"
        )
    parts.append(
        f'<text class="axis-label" x="{(left + right) / 2}" y="{HEIGHT - 4}" '
        'text-anchor="middle">time (UTC)</text></g>'
    )
    # Lines, then the legend above the plot.
    for line in plotted:
        colour = COLOURS[line.colour % len(COLOURS)]
        dash = DASHES[line.dash % len(DASHES)]
        mean = "" if line.mean is None else _number(line.mean)
        parts.append(
            f'<g class="series" data-series="{escape(line.label)}" data-count="{line.count}" '
            f'data-mean="{mean}" stroke="{colour}" fill="{colour}">'
        )
        coordinates = " ".join(f"{x(at):.1f},{y(value):.1f}" for at, value, _ in line.points)
        dashing = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline fill="none" points="{coordinates}"{dashing}/>')
        for at, value, count in line.points:
            parts.append(
                f'<circle cx="{x(at):.1f}" cy="{y(value):.1f}" r="3" data-x="{at.isoformat()}" '
                f'data-y="{_number(value)}" data-count="{count}"><title>'
                f"{escape(line.label)} · {at:%Y-%m-%d %H:%M} UTC · {escape(y_format(value))} "
                f"({count} executions)</title></circle>"
            )
        parts.append("</g>")
    parts.append('<g class="legend">')
    for x_at, y_at, line in legend:
        colour = COLOURS[line.colour % len(COLOURS)]
        dash = DASHES[line.dash % len(DASHES)]
        dashing = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<line x1="{x_at:.1f}" y1="{y_at}" x2="{x_at + 18:.1f}" y2="{y_at}" '
            f'stroke="{colour}" stroke-width="2"{dashing}/>'
            f'<text x="{x_at + 22:.1f}" y="{y_at + 4}">{escape(line.label)}</text>'
        )
    parts.append("</g></svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class Mark:
    """An event on the version timeline: what (`promote`, `rollback`, `approval` …), in which
    stage's lane, when, and the text shown on hover."""

    kind: str
    stage: str
    at: dt.datetime
    text: str


# Small shapes below a lane, centred on (x, y): a promotion points up, a rollback down, a
# sign-off is a diamond, anything else a square.
_MARK_SHAPES = {
    "promote": "M{x:.1f} {y:.1f} l-4 6 h8 z",
    "rollback": "M{x:.1f} {y:.1f} m-4 0 h8 l-4 6 z",
    "rollout_abort": "M{x:.1f} {y:.1f} m-4 0 h8 l-4 6 z",
    "approval": "M{x:.1f} {y:.1f} l4 3 l-4 3 l-4 -3 z",
    "other": "M{x:.1f} {y:.1f} m-3 0 h6 v6 h-6 z",
}


def stay_timeline(
    stages: Sequence[str],
    stays: Sequence[tuple[str, str, dt.datetime, dt.datetime | None]],
    now: dt.datetime,
    marks: Sequence[Mark] = (),
) -> Markup:
    """The version timeline: one lane per stage, a bar per stay (stage, version, entered, left;
    left None: there now), coloured by version, each with `data-version`, `data-stage`,
    `data-entered` and `data-left`; below each lane, a mark per promotion, rollback and sign-off
    into that stage (`data-kind`, `data-at`)."""
    width, lane, top, label_width = TIMELINE_WIDTH, 34, 8, 90
    height = top * 2 + lane * len(stages) + 20
    head = (
        f'<svg class="timeline" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg"><title>Version timeline across '
        "stages</title>"
    )
    if not stays:
        return Markup(head + "</svg>")
    start = min([*(s[2] for s in stays), *(m.at for m in marks)])
    end = max([now, *(s[3] for s in stays if s[3] is not None)])
    span = (end - start).total_seconds() or 1.0
    left, right = label_width, width - MARGIN_RIGHT

    def x(at: dt.datetime) -> float:
        return left + (right - left) * ((at - start).total_seconds() / span)

    versions = list(dict.fromkeys(s[1] for s in sorted(stays, key=lambda s: s[2])))
    parts = [head]
    for index, stage in enumerate(stages):
        y = top + lane * index
        parts.append(
            f'<text x="4" y="{y + 17}">{escape(stage)}</text>'
            f'<line x1="{left}" y1="{y + lane - 2}" x2="{right}" y2="{y + lane - 2}" '
            'stroke="#eef0f3"/>'
        )
    for stage, version, entered, left_at in stays:
        if stage not in stages:
            continue
        y = top + lane * list(stages).index(stage)
        x1, x2 = x(entered), x(left_at or now)
        colour = COLOURS[versions.index(version) % len(COLOURS)]
        parts.append(
            f'<g class="stay" data-stage="{escape(stage)}" data-version="{escape(version)}" '
            f'data-entered="{entered.isoformat()}" '
            f'data-left="{left_at.isoformat() if left_at else ""}">'
            f'<rect x="{x1:.1f}" y="{y + 4}" width="{max(2.0, x2 - x1):.1f}" height="18" '
            f'rx="3" fill="{colour}" fill-opacity="0.8"><title>{escape(version)} in '
            f"{escape(stage)}: {entered:%Y-%m-%d %H:%M} – "
            f"{(left_at.strftime('%Y-%m-%d %H:%M') if left_at else 'now')} UTC</title></rect>"
            f'<text x="{x1 + 3:.1f}" y="{y + 17}">{escape(version)}</text></g>'
        )
    for mark in marks:
        if mark.stage not in stages:
            continue
        y = top + lane * list(stages).index(mark.stage) + 26
        mx = x(mark.at)
        shape = _MARK_SHAPES.get(mark.kind, _MARK_SHAPES["other"])
        colour = "#cf222e" if mark.kind in ("rollback", "rollout_abort") else "#1d2330"
        parts.append(
            f'<g class="mark" data-kind="{escape(mark.kind)}" data-stage="{escape(mark.stage)}" '
            f'data-at="{mark.at.isoformat()}"><path d="{shape.format(x=mx, y=y)}" '
            f'fill="{colour}"><title>{escape(mark.text)}</title></path></g>'
        )
    bottom = top + lane * len(stages) + 14
    parts.append(
        f'<text x="{left}" y="{bottom}">{start:%Y-%m-%d %H:%M}</text>'
        f'<text x="{right}" y="{bottom}" text-anchor="end">now</text></svg>'
    )
    return Markup("".join(parts))
