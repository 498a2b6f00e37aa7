"""The SVG charts on their own: they plot the numbers they carry, on axes that hold them."""

from __future__ import annotations

import datetime as dt
import itertools
import re

from skillstage.dashboard.charts import Line, Mark, line_chart, nice_ticks, stay_timeline
from tests.dashboard.charts_read import read_charts

T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def test_points_carry_their_values_and_higher_is_drawn_higher() -> None:
    line = Line("1.0.0", [(_at(0), 0.5, 3), (_at(30), 0.9, 4), (_at(60), 0.7, 5)], 12, 0.7)
    svg = str(line_chart("Fidelity <per version>", [line], y_label="fidelity", y_range=(0, 1)))
    assert "<title>Fidelity &lt;per version&gt;</title>" in svg
    (series,) = read_charts(svg)["Fidelity <per version>"].values()
    assert (series.count, series.mean) == (12, 0.7)
    assert [(y, n) for _, y, n in series.points] == [(0.5, 3), (0.9, 4), (0.7, 5)]
    heights = [float(cy) for cy in re.findall(r'<circle cx="[^"]+" cy="([^"]+)"', svg)]
    assert heights[1] < heights[2] < heights[0]  # SVG's y grows downwards
    xs = [float(cx) for cx in re.findall(r'<circle cx="([^"]+)"', svg)]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    y_axis = re.search(r'<g class="y-ticks">(.*?)</g>', svg)
    assert y_axis
    assert re.findall(r">([^<]+)</text>", y_axis.group(1)) == ["0", "0.5", "1"]
    x_axis = re.search(r'<g class="x-ticks">(.*?)</g>', svg)
    assert x_axis
    assert re.findall(r">([^<]+)</text>", x_axis.group(1))[:3] == [
        "12:00:00",
        "12:30:00",
        "13:00:00",
    ]


def test_one_point_and_no_point() -> None:
    single = str(line_chart("t", [Line("a", [(_at(0), 4.0, 1)], 1, 4.0)], y_label="ms"))
    assert 'data-y="4"' in single and "nan" not in single
    empty = str(line_chart("t", [Line("a", [], 0, None)], y_label="ms"))
    assert "no executions recorded" in empty and "<circle" not in empty


def test_nice_ticks_cover_the_range_in_round_steps() -> None:
    assert nice_ticks(0, 1) == [0.0, 0.5, 1.0]
    ticks = nice_ticks(0, 11.7)
    assert ticks[0] <= 0 and ticks[-1] >= 11.7
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and steps.pop() in (1, 2, 5, 10)


def test_timeline_has_a_bar_per_stay_the_open_one_until_now() -> None:
    stays = [
        ("staged", "1.0.0", _at(0), _at(60)),
        ("production", "1.0.0", _at(60), None),
    ]
    marks = [
        Mark("approval", "production", _at(50), "sign-off approved <alice>"),
        Mark("promote", "production", _at(60), "promote: 1.0.0"),
    ]
    svg = str(stay_timeline(["prototype", "staged", "production"], stays, _at(120), marks))
    bars = re.findall(r'<g class="stay" data-stage="(\w+)" data-version="([\d.]+)"', svg)
    assert bars == [("staged", "1.0.0"), ("production", "1.0.0")]
    assert 'data-left=""' in svg  # still there
    shown = re.findall(
        r'<g class="mark" data-kind="(\w+)" data-stage="(\w+)" data-at="([^"]+)"', svg
    )
    assert shown == [
        ("approval", "production", _at(50).isoformat()),
        ("promote", "production", _at(60).isoformat()),
    ]
    assert "sign-off approved &lt;alice&gt;" in svg
