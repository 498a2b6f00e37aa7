"""The dashboard's pages as HTML strings: Jinja2 templates over `data`'s gathered facts.

`render_overview` and `render_skill` are plain functions: the server's routes call them, and
`skillstage report NAME --html` writes `render_skill(..., static=True)` to a file. A page is
self-contained: its CSS is inlined, its charts are inline SVG, and it loads nothing else.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from skillstage import __version__
from skillstage.config import Project
from skillstage.dashboard import charts, data
from skillstage.tokens import APPROVE, OPERATE

if TYPE_CHECKING:
    import jinja2

    from skillstage.metrics.summary import MetricsSummary


# What a page may load: nothing from anywhere, its inline style, and data: images (the empty icon).
CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True)
class ActionContext:
    """What the viewer may do from a page: the CSRF token its forms carry, and the permissions
    (`skillstage.tokens.OPERATE`, `APPROVE`) its role grants. None on a page: read-only."""

    csrf_token: str
    permissions: frozenset[str] = field(default_factory=frozenset)

    @property
    def may_operate(self) -> bool:
        return OPERATE in self.permissions

    @property
    def may_approve(self) -> bool:
        return APPROVE in self.permissions


@functools.cache
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("skillstage.dashboard", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, age=age, figure=figure, percent=percent, short=short)
    env.globals.update(version=__version__, css=Markup(_css()), csp=CONTENT_SECURITY_POLICY)
    return env


def _css() -> str:
    return (
        resources.files("skillstage.dashboard")
        .joinpath("templates/dashboard.css")
        .read_text(encoding="utf-8")
    )


# -- filters ---------------------------------------------------------------------------------------


def when(at: dt.datetime | str | None) -> str:
    if at is None:
        return "-"
    if isinstance(at, str):
        try:
            parsed = dt.datetime.fromisoformat(at)
        except ValueError:
            return at
        return parsed.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return at.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age(hours: float) -> str:
    """`skillstage list`'s age: 5.2h, 52h, and days past a week."""
    if hours >= 24 * 7:
        return f"{hours / 24:.0f}d"
    return f"{hours:.0f}h" if hours >= 10 else f"{hours:.1f}h"


def figure(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def short(digest: str | None) -> str:
    return (digest or "")[:12]


# -- charts ----------------------------------------------------------------------------------------

# (key, title, y label, attribute of a summary, y range, format)
_SCORE_CHARTS: tuple[tuple[str, str, str, str, tuple[float, float] | None, str], ...] = (
    ("fidelity", "Pattern fidelity", "fidelity", "pattern_fidelity", (0.0, 1.0), "score"),
    ("quality", "Outcome quality", "quality", "outcome_quality", (0.0, 1.0), "score"),
    ("exceptions", "Exception rate", "exception rate", "exception_rate", (0.0, 1.0), "percent"),
)
_PERCENTILES = (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"))
_FORMATS: dict[str, Callable[[float], str]] = {
    "score": lambda v: f"{v:.2f}",
    "percent": lambda v: f"{100 * v:.0f}%",
    "ms": lambda v: f"{v:g} ms",
}


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    svg: Markup


def _value(summary: MetricsSummary, attribute: str) -> float | None:
    value = getattr(summary, attribute)
    return None if value is None else float(value)


def _lines(
    series: list[data.Series], attribute: str, *, dash: int = 0, suffix: str = ""
) -> list[charts.Line]:
    found = []
    for index, line in enumerate(series):
        points = [
            (point.middle, value, point.summary.count)
            for point in line.points
            if (value := _value(point.summary, attribute)) is not None
        ]
        found.append(
            charts.Line(
                line.label + suffix,
                points,
                line.total.count,
                _value(line.total, attribute),
                colour=index,
                dash=dash,
            )
        )
    return found


def build_charts(series: list[data.Series], prefix: str, what: str) -> list[Chart]:
    """Fidelity, quality, exception rate and execution time p50/p95/p99 of `series`."""
    found = []
    for key, title, y_label, attribute, y_range, style in _SCORE_CHARTS:
        chart_title = f"{title} {what}"
        found.append(
            Chart(
                f"{prefix}-{key}",
                chart_title,
                charts.line_chart(
                    chart_title,
                    _lines(series, attribute),
                    y_label=y_label,
                    y_range=y_range,
                    y_format=_FORMATS[style],
                    chart_id=f"{prefix}-{key}",
                ),
            )
        )
    lines = [
        line
        for dash, (name, attribute) in enumerate(_PERCENTILES)
        for line in _lines(series, attribute, dash=dash, suffix=f" {name}")
    ]
    chart_title = f"Execution time p50/p95/p99 {what}"
    found.append(
        Chart(
            f"{prefix}-time",
            chart_title,
            charts.line_chart(
                chart_title,
                lines,
                y_label="execution time (ms)",
                y_format=_FORMATS["ms"],
                chart_id=f"{prefix}-time",
            ),
        )
    )
    return found


# -- pages -----------------------------------------------------------------------------------------


def _render(template: str, /, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def render_overview(project: Project, *, actions: ActionContext | None = None) -> str:
    """The overview page: skills per stage (SLA breaches marked), the key metrics, rollouts,
    holds, kill switches and breakers, and recent history."""
    return _render(
        "overview.html.j2",
        page=data.overview(project),
        project=project,
        actions=actions,
        static=False,
    )


def render_skill(
    project: Project,
    name: str,
    *,
    actions: ActionContext | None = None,
    static: bool = False,
    notice: str | None = None,
) -> str:
    """A skill's page: its version timeline, the gates of its next move, its rollouts, charts
    per version and per rollout arm, and its latest failure report. `static`: for a file
    (`report --html`): no links to other pages, no actions. `notice`: what an action just did."""
    page = data.skill_page(project, name)
    version_charts = build_charts(page.series, "version", "per version")
    arm_charts = build_charts(page.arms.series, "arm", "per rollout arm") if page.arms else []
    return _render(
        "skill.html.j2",
        page=page,
        project=project,
        actions=None if static else actions,
        static=static,
        notice=notice,
        buckets=data.BUCKETS,
        timeline_svg=charts.stay_timeline(
            page.stages,
            [(t.stage, t.version, t.entered_at, t.left_at) for t in reversed(page.stays)],
            page.at,
            _marks(page),
        ),
        version_charts=version_charts,
        arm_charts=arm_charts,
        approve_to=_approve_target(page),
        rollback_stages=[s.stage for s in page.current if _may_roll_back(page, s.stage)],
    )


# The events the timeline marks, and the lane each goes on.
_MARKED = {
    "promote": "to_stage",
    "rollback": "from_stage",
    "approval": "to_stage",
    "rollout_start": "to_stage",
    "rollout_abort": "to_stage",
}


def _marks(page: data.SkillPage) -> list[charts.Mark]:
    """Promotions, rollbacks, sign-offs and rollouts on the timeline (those `history` lists)."""
    found = []
    for event in page.events:
        lane = getattr(event, _MARKED[event.kind], None) if event.kind in _MARKED else None
        if lane is None or (event.kind == "promote" and not event.success):
            continue
        what = event.kind.replace("_", " ")
        if event.kind == "approval":
            what = "sign-off " + ("approved" if event.success else "not approved")
        found.append(
            charts.Mark(
                event.kind,
                lane,
                event.at,
                f"{what}: {event.version or ''} {event.from_stage or '-'} → "
                f"{event.to_stage or '-'} by {event.actor}, {when(event.at)}"
                + (f" ({event.reason})" if event.reason else ""),
            )
        )
    return found


def _approve_target(page: data.SkillPage) -> str | None:
    """The stage a sign-off on this page is for: the next move's, when its gates ask for one."""
    readiness = page.readiness
    if readiness is None or readiness.to_stage is None:
        return None
    if any(gate.gate == "approval" for gate in readiness.gates):
        return readiness.to_stage
    return None


def _may_roll_back(page: data.SkillPage, stage: str) -> bool:
    """Whether to offer a rollback in `stage`: every stage but the first (its confirmation, a
    dry run, says what would happen, or why it cannot)."""
    return stage != page.stages[0]


def render_page(template: str, /, **context: Any) -> str:
    """One of the action pages (confirmation, sign-off form, result, error)."""
    context.setdefault("static", False)
    return _render(template, **context)
