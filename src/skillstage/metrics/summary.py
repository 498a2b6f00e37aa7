"""A set of executions summarised: count, means, rates and execution-time percentiles
(seed 002 §5.4 `get_skill_metrics`, seed 003's p50/p95/p99)."""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any

from skillstage.errors import UsageError
from skillstage.metrics.compare import Sample
from skillstage.store.metrics import Rows


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    # fsum: the exact sum, rounded once (sum() of 100 times 0.85 over 100 is 0.8499999999999993)
    return math.fsum(present) / len(present) if present else None


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def percentile(ordered: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of sorted values (p50 of [1, 2, 3, 4] is 2)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class MetricsSummary:
    """What a set of executions says about a skill (version)."""

    count: int
    pattern_fidelity: float | None
    outcome_quality: float | None
    execution_time_ms: float | None  # mean
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    exception_rate: float | None
    false_positive_rate: float | None
    false_negative_rate: float | None
    critical_failures: int
    first: dt.datetime | None
    last: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, float):
                value = round(value, 6)
            elif isinstance(value, dt.datetime):
                value = value.isoformat()
            data[key] = value
        return data


def summarise(rows: Rows) -> MetricsSummary:
    """Means of the scores and time, rates of the flags, percentiles of the time."""
    columns = rows.columns
    times = sorted(t for t in columns["execution_time_ms"] if t is not None)
    return MetricsSummary(
        count=rows.count,
        pattern_fidelity=_mean(columns["pattern_fidelity"]),
        outcome_quality=_mean(columns["outcome_quality"]),
        execution_time_ms=_mean(times),
        p50_ms=percentile(times, 0.50),
        p95_ms=percentile(times, 0.95),
        p99_ms=percentile(times, 0.99),
        max_ms=times[-1] if times else None,
        exception_rate=_rate(columns["exception"]),
        false_positive_rate=_rate(columns["false_positive"]),
        false_negative_rate=_rate(columns["false_negative"]),
        critical_failures=sum(columns["critical"]),
        first=rows.first,
        last=rows.last,
    )


def as_sample(rows: Rows) -> Sample:
    """The rows as one side of a comparison."""
    c = rows.columns
    return Sample(
        pattern_fidelity=c["pattern_fidelity"],
        outcome_quality=c["outcome_quality"],
        execution_time_ms=c["execution_time_ms"],
        exception=c["exception"],
        false_positive=c["false_positive"],
        false_negative=c["false_negative"],
        critical=c["critical"],
    )


_TIMEFRAME = re.compile(r"(?:last_)?(?P<count>\d+)(?:_)?(?P<unit>h|hours|d|days|w|weeks)\Z")
_UNITS = {"h": 1, "hours": 1, "d": 24, "days": 24, "w": 168, "weeks": 168}


_MAX_TIMEFRAME_HOURS = 100 * 366 * 24  # a century: longer is "all"


def parse_timeframe(text: str) -> dt.timedelta | None:
    """`7d`, `24h`, `2w`, seed 002's `last_7_days` / `last_24_hours`; `all` is None (no limit)."""
    hint = "use e.g. 24h, 7d, 2w, last_7_days or all"
    if not isinstance(text, str):
        raise UsageError(f"not a timeframe: {text!r} (a string is needed)", hint=hint)
    if text.strip().lower() == "all":
        return None
    match = _TIMEFRAME.match(text.strip().lower())
    if match is None:
        raise UsageError(f"not a timeframe: {text!r}", hint=hint)
    hours = int(match["count"]) * _UNITS[match["unit"]]
    if hours > _MAX_TIMEFRAME_HOURS:
        raise UsageError(f"timeframe {text!r} is longer than a century", hint=hint)
    return dt.timedelta(hours=hours)
