"""The automated rollback triggers (seed 002 §3.1; seed 001's error rate and performance
degradation as optional ones), evaluated for one live version from its recorded executions.

Every trigger reads the version's executions since it entered the stage (benchmark runs left
out), newest first, and never fires on fewer executions than its window: it says "7/10
executions" instead. A value on the threshold does not fire (fidelity 0.85 is not "below 0.85").
Each finding carries seed 002's reason code (`pattern_fidelity_drop_below_85`) and trigger metric
(`fidelity=0.83`), the text the rollback records.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skillstage.config import TriggerConfig
from skillstage.store import Transaction

# A critical false negative, as the partial index ix_execution_critical_miss is defined: a query
# that says exactly this uses it.
CRITICAL_MISS = "false_negative AND critical"

_SAMPLE = (
    "SELECT pattern_fidelity, outcome_quality, execution_time_ms, exception, false_positive,"
    ' false_negative, critical, "timestamp" FROM execution WHERE skill_id = :skill_id'
    " AND digest = :digest AND benchmark = :benchmark"
)


@dataclass(frozen=True)
class LiveVersion:
    """One version live in one stage, as the watcher sees it."""

    skill_id: int
    name: str
    stage: str
    version: str
    digest: str
    entered_at: dt.datetime
    frontmatter: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    """One trigger's verdict on one live version."""

    code: str  # the reason a rollback records: pattern_fidelity_drop_below_85
    fired: bool
    metric: str | None  # fidelity=0.83; None while the window is not full
    detail: str  # in words, for people
    seen: int = 0  # executions the trigger looked at
    window: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class HealthResult:
    """What a dependency's health check said this pass."""

    name: str
    ok: bool
    metric: str  # exit=1, timeout=10s
    detail: str


def _pct(value: float) -> str:
    """0.85 → "85", 0.925 → "92.5": the number in a reason code."""
    return f"{value * 100:.4g}"


def _times(value: float) -> str:
    return f"{value:g}x"


@dataclass
class Sample:
    """The newest executions of a version in its stage, newest first, column by column."""

    fidelity: list[float]
    quality: list[float]
    time_ms: list[float]
    exception: list[bool]
    false_positive: list[bool]
    false_negative: list[bool]
    critical: list[bool]
    timed_at: list[dt.datetime]  # the time of each execution with a time, as time_ms

    @property
    def count(self) -> int:
        return len(self.exception)


def sample(
    tx: Transaction,
    live: LiveVersion,
    *,
    limit: int,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    oldest_first: bool = False,
    times: bool = False,
) -> Sample:
    """Up to `limit` executions of `live` (in its stage: since it entered, by default); with
    `times`, when each timed one ran (reading them is most of a large pass's cost)."""
    d = tx.dialect
    sql = _SAMPLE
    params: dict[str, Any] = {
        "skill_id": live.skill_id,
        "digest": live.digest,
        "benchmark": False,
        "limit": limit,
    }
    since = live.entered_at if since is None and until is None else since
    if since is not None:
        sql += ' AND "timestamp" >= :since'
        params["since"] = d.time(since)
    if until is not None:
        sql += ' AND "timestamp" < :until'
        params["until"] = d.time(until)
    order = "ASC" if oldest_first else "DESC"
    rows = tx.query(sql + f' ORDER BY "timestamp" {order} LIMIT :limit', params)
    return Sample(
        fidelity=[r[0] for r in rows if r[0] is not None],
        quality=[r[1] for r in rows if r[1] is not None],
        time_ms=[r[2] for r in rows if r[2] is not None],
        exception=[bool(r[3]) for r in rows],
        false_positive=[bool(r[4]) for r in rows],
        false_negative=[bool(r[5]) for r in rows],
        critical=[bool(r[6]) for r in rows],
        timed_at=[d.read_time(r[7]) for r in rows if r[2] is not None]  # type: ignore[misc]
        if times
        else [],
    )


def critical_misses(tx: Transaction, live: LiveVersion) -> int:
    """Critical false negatives of `live` since it entered its stage (a partial index holds
    only those, so this reads none of the version's other executions)."""
    # SQLite, without statistics, would pick the wider index of every execution; PostgreSQL's
    # planner knows the partial one is small.
    hint = " INDEXED BY ix_execution_critical_miss" if tx.dialect.name == "sqlite" else ""
    return int(
        tx.scalar(
            f"SELECT COUNT(*) FROM execution{hint} WHERE skill_id = :skill_id"
            ' AND digest = :digest AND benchmark = :benchmark AND "timestamp" >= :since'
            f" AND {CRITICAL_MISS}",
            {
                "skill_id": live.skill_id,
                "digest": live.digest,
                "benchmark": False,
                "since": tx.dialect.time(live.entered_at),
            },
        )
        or 0
    )


@dataclass(frozen=True)
class Baseline:
    """A version's usual execution time, and where it was measured."""

    mean_ms: float | None
    count: int
    source: str  # "before the stage" | "first in the stage"
    complete: bool  # enough executions: the baseline no longer changes
    until: dt.datetime | None = None  # first in the stage: the last of them (later ones count)


def baseline(tx: Transaction, live: LiveVersion, triggers: TriggerConfig) -> Baseline:
    """Seed 002's "baseline average": the version's latest executions before it entered the
    stage (at least a window of them), else its first `baseline_executions` in the stage."""
    n = triggers.baseline_executions
    before = sample(tx, live, limit=n, until=live.entered_at)
    if len(before.time_ms) >= min(n, triggers.window):
        return Baseline(_mean(before.time_ms), len(before.time_ms), "before the stage", True)
    first = sample(tx, live, limit=n, since=live.entered_at, oldest_first=True, times=True)
    count = len(first.time_ms)
    last = first.timed_at[-1] if first.timed_at else None
    return Baseline(_mean(first.time_ms), count, "first in the stage", count >= n, last)


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _rate(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


def _waiting(code: str, what: str, seen: int, window: int) -> Finding:
    return Finding(
        code, False, None, f"{what}: {seen}/{window} executions, waiting for more", seen, window
    )


def evaluate(
    tx: Transaction,
    live: LiveVersion,
    triggers: TriggerConfig,
    *,
    health: Mapping[str, HealthResult] | None = None,
    base: Baseline | None = None,
) -> list[Finding]:
    """Every trigger's finding for `live`, the most severe first (a critical miss, a failing
    dependency, then the rates and means)."""
    t = triggers
    findings: list[Finding] = []
    if t.max_critical_false_negatives is not None:
        misses = critical_misses(tx, live)
        findings.append(
            Finding(
                "critical_false_negative",
                misses > t.max_critical_false_negatives,
                f"critical_false_negatives={misses}",
                f"{misses} critical false negative(s) since it entered {live.stage}"
                + (f" (allowed: {t.max_critical_false_negatives})" if misses else ""),
                misses,
                1,
            )
        )
    for name, result in (health or {}).items():
        findings.append(
            Finding(
                f"dependency_failure:{name}",
                not result.ok,
                result.metric,
                result.detail,
                1,
                1,
            )
        )
    size = max(t.window, t.rate_window)
    recent = sample(tx, live, limit=size)
    for code, values, limit, key, what in (
        (
            f"pattern_fidelity_drop_below_{_pct(t.min_pattern_fidelity or 0)}",
            recent.fidelity,
            t.min_pattern_fidelity,
            "fidelity",
            "mean pattern fidelity",
        ),
        (
            f"outcome_quality_drop_below_{_pct(t.min_outcome_quality or 0)}",
            recent.quality,
            t.min_outcome_quality,
            "quality",
            "mean outcome quality",
        ),
    ):
        if limit is None:
            continue
        window = values[: t.window]
        if len(window) < t.window:
            findings.append(_waiting(code, what, len(window), t.window))
            continue
        mean = math.fsum(window) / len(window)  # exact: ten 0.85s are 0.85, not below
        findings.append(
            Finding(
                code,
                mean < limit,
                f"{key}={mean:.2f}" if round(mean, 2) != limit else f"{key}={mean:.4f}",
                f"{what} {mean:.3f} over the last {t.window} executions "
                + ("is below" if mean < limit else "is not below")
                + f" {limit:g}",
                len(window),
                t.window,
            )
        )
    errors = [e or m for e, m in zip(recent.exception, recent.false_negative, strict=True)]
    for code, flags, limit, key, what in (
        (
            f"false_positive_rate_above_{_pct(t.max_false_positive_rate or 0)}pct",
            recent.false_positive,
            t.max_false_positive_rate,
            "false_positive_rate",
            "false positive rate",
        ),
        (
            f"exception_rate_above_{_pct(t.max_exception_rate or 0)}pct",
            recent.exception,
            t.max_exception_rate,
            "exception_rate",
            "exception rate",
        ),
        (
            f"error_rate_above_{_pct(t.max_error_rate or 0)}pct",
            errors,
            t.max_error_rate,
            "error_rate",
            "error rate (exceptions and misses)",
        ),
    ):
        if limit is None:
            continue
        marks = flags[: t.rate_window]
        if len(marks) < t.rate_window:
            findings.append(_waiting(code, what, len(marks), t.rate_window))
            continue
        rate = _rate(marks)
        findings.append(
            Finding(
                code,
                rate > limit,
                f"{key}={rate:.2f}",
                f"{what} {sum(marks)}/{len(marks)} = {rate:.0%} over the last "
                f"{t.rate_window} executions "
                + ("is above" if rate > limit else "is not above")
                + f" {limit:.0%}",
                len(marks),
                t.rate_window,
            )
        )
    ratios = [
        (f"execution_time_above_{_times(r)}_baseline", r)
        for r in [t.max_execution_time_ratio]
        if r is not None
    ] + [
        (f"performance_degradation_above_{_pct(p)}pct", 1 + p)
        for p in [t.max_performance_degradation]
        if p is not None
    ]
    if ratios:
        base = base if base is not None else baseline(tx, live, t)
        # Timed executions after the baseline's, newest first.
        timed = recent.time_ms
        if base.until is not None:
            dated = sample(tx, live, limit=size, times=True)
            timed = [
                ms for ms, at in zip(dated.time_ms, dated.timed_at, strict=True) if at > base.until
            ]
        window = timed[: t.window]
        for code, ratio in ratios:
            if base.mean_ms is None or not base.complete:
                findings.append(
                    _waiting(code, "the baseline execution time", base.count, t.baseline_executions)
                )
                continue
            if len(window) < t.window:
                findings.append(_waiting(code, "mean execution time", len(window), t.window))
                continue
            mean = math.fsum(window) / len(window)
            now = mean / base.mean_ms if base.mean_ms > 0 else float("inf")
            findings.append(
                Finding(
                    code,
                    now > ratio,
                    f"execution_time_ratio={now:.2f}",
                    f"mean execution time {mean:.0f} ms over the last {t.window} executions is "
                    f"{now:.2f}x the baseline {base.mean_ms:.0f} ms ({base.source}), "
                    + ("above" if now > ratio else "not above")
                    + f" {ratio:g}x",
                    len(window),
                    t.window,
                )
            )
    return findings


def fired(findings: Sequence[Finding]) -> Finding | None:
    """The finding a rollback names: the first that fired (the list is most severe first)."""
    return next((f for f in findings if f.fired), None)
