"""Reading back the numbers a page's charts carry (their `data-*` attributes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class SeriesRead:
    label: str
    count: int
    mean: float | None
    points: list[tuple[str, float, int]] = field(default_factory=list)  # (x, y, count)


class _ChartParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.charts: dict[str, dict[str, SeriesRead]] = {}
        self._chart: str | None = None
        self._series: SeriesRead | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {key: value or "" for key, value in attrs}
        if tag == "svg" and "data-chart" in found:
            self._chart = found.get("id") or found["data-chart"]
            self.charts[self._chart] = {}
        elif tag == "g" and "data-series" in found and self._chart is not None:
            mean = found.get("data-mean", "")
            self._series = SeriesRead(
                found["data-series"], int(found["data-count"]), float(mean) if mean else None
            )
            self.charts[self._chart][self._series.label] = self._series
        elif tag == "circle" and self._series is not None:
            self._series.points.append(
                (found["data-x"], float(found["data-y"]), int(found["data-count"]))
            )

    def handle_endtag(self, tag: str) -> None:
        if tag == "g":
            self._series = None
        elif tag == "svg":
            self._chart = None


def read_charts(html: str) -> dict[str, dict[str, SeriesRead]]:
    """{chart id: {series label: its numbers}} of every chart on the page."""
    parser = _ChartParser()
    parser.feed(html)
    return parser.charts
