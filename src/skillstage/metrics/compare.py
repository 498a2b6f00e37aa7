"""Statistical comparison of two skill versions' executions (seed 002 A/B).

Side A is the baseline, side B the candidate. Each metric is compared with a test that fits it:

- scores (`pattern_fidelity`, `outcome_quality`; higher is better) and execution time (lower is
  better) with the two-sided Mann-Whitney U test: execution data are bounded, skewed and full of
  ties, so a rank test is safer than a t-test. Its effect size is the rank-biserial correlation,
  positive when B tends to be larger.
- rates (exceptions, false positives, false negatives, critical failures; lower is better) with a
  two-sided pooled two-proportion z-test. Its effect size is Cohen's h, positive when B's rate is
  higher.

A metric is a regression (`worse`) when its p-value is below `alpha`, the effect points the bad
way for its kind, and the difference is larger than its `Margins`: over hundreds of executions the
tests find differences too small to matter (a mean time of 5.0 ms against 4.7 ms). A side with
fewer than `min_sample` values gets its figures reported but no test: a p-value from three
executions would only invite overconfident promotions.

Pure functions, no database access. The tests are computed here, as scipy's "auto" method
computes them; scipy is imported only for the exact test of two small tie-free samples, because
importing it costs the CLI a few hundred milliseconds on every start.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

SCORE = "score"  # higher is better
TIME = "time"  # lower is better
RATE = "rate"  # lower is better

# Float sums and differences are off in their last bits: 100 executions of quality 0.85 average
# to 0.8499999999999993, a rate going from 0.03 to 0.05 rises by 0.020000000000000004. A figure
# this close (relatively) to a threshold is on it, so that a verdict never rests on rounding.
RELATIVE_TOLERANCE = 1e-9


def at_least(actual: float, minimum: float) -> bool:
    """`actual >= minimum`, a figure on the threshold counting as on it."""
    return actual >= minimum or math.isclose(actual, minimum, rel_tol=RELATIVE_TOLERANCE)


def more_than(actual: float, limit: float) -> bool:
    """`actual > limit`, a figure on the limit counting as on it (not beyond)."""
    return actual > limit and not math.isclose(actual, limit, rel_tol=RELATIVE_TOLERANCE)


def below(actual: float, limit: float) -> bool:
    """`actual < limit`, a figure on the limit counting as on it (not below)."""
    return actual < limit and not math.isclose(actual, limit, rel_tol=RELATIVE_TOLERANCE)


MANN_WHITNEY = "mann-whitney-u"
TWO_PROPORTION_Z = "two-proportion-z"
RANK_BISERIAL = "rank-biserial"
COHEN_H = "cohen-h"

_SIGNIFICANT_DIGITS = 6


@dataclass(frozen=True)
class Sample:
    """The executions of one side: one list entry per execution (None where a value is missing)."""

    pattern_fidelity: list[float | None]
    outcome_quality: list[float | None]
    execution_time_ms: list[float | None]
    exception: list[bool]
    false_positive: list[bool]
    false_negative: list[bool]
    critical: list[bool]  # the execution was a critical failure (critical false negative)

    def __post_init__(self) -> None:
        # Every list describes the same executions; a length mismatch means the caller lost or
        # duplicated rows, and comparing such a sample would silently mislead.
        lengths = {f.name: len(getattr(self, f.name)) for f in fields(self)}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{name}={length}" for name, length in lengths.items())
            raise ValueError(f"Sample lists must all have one entry per execution; got {detail}")

    @property
    def count(self) -> int:
        """The number of executions in the sample."""
        return len(self.exception)


@dataclass(frozen=True)
class Margins:
    """How much worse than the baseline a metric must be, besides significantly, to be worse."""

    score: float = 0.02  # a mean score lower by more than this
    time_ratio: float = 1.5  # a mean time more than this many times the baseline's
    rate: float = 0.02  # a rate higher by more than this

    def exceeded(self, kind: str, a: float, b: float) -> bool:
        """Whether B's figure is beyond the margin from A's, the bad way for `kind`."""
        if kind == SCORE:
            return more_than(a - b, self.score)
        if kind == TIME:
            return more_than(b, a * self.time_ratio)
        return more_than(b - a, self.rate)


@dataclass(frozen=True)
class MetricComparison:
    """One metric of A against B: the figures of each side, the test and its verdict."""

    metric: str
    kind: str  # SCORE, TIME or RATE
    a: float | None  # mean (scores, time) or proportion (rates) of side A; None if no values
    b: float | None
    difference: float | None  # b - a
    n_a: int  # values present on side A
    n_b: int
    test: str  # MANN_WHITNEY or TWO_PROPORTION_Z
    p_value: float | None  # two-sided; None when a side has fewer than min_sample values
    effect_size: float | None
    effect_size_name: (
        str  # RANK_BISERIAL (positive: B tends larger) or COHEN_H (positive: B higher)
    )
    insufficient_data: bool  # n_a or n_b below min_sample
    worse: bool  # B significantly worse than A, and by more than the margin

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, floats rounded to 6 significant digits."""
        return {
            "metric": self.metric,
            "kind": self.kind,
            "a": _round(self.a),
            "b": _round(self.b),
            "difference": _round(self.difference),
            "n_a": self.n_a,
            "n_b": self.n_b,
            "test": self.test,
            "p_value": _round(self.p_value),
            "effect_size": _round(self.effect_size),
            "effect_size_name": self.effect_size_name,
            "insufficient_data": self.insufficient_data,
            "worse": self.worse,
        }


@dataclass(frozen=True)
class Comparison:
    """Every metric of A against B, and the thresholds they were judged with."""

    metrics: list[MetricComparison]
    min_sample: int
    alpha: float
    # Executions on each side: `insufficient` is about whole samples, not single metrics.
    count_a: int
    count_b: int

    @property
    def regressions(self) -> list[MetricComparison]:
        """The metrics on which B is significantly worse than A."""
        return [m for m in self.metrics if m.worse]

    @property
    def unmeasured(self) -> list[MetricComparison]:
        """The metrics the baseline has enough values of and the candidate has not: nothing can
        be said about B on them, though its executions are many (their values were not recorded)."""
        return [m for m in self.metrics if m.insufficient_data and m.n_a >= self.min_sample]

    @property
    def insufficient(self) -> bool:
        """True when either side has fewer than `min_sample` executions, or the candidate too few
        values of a metric the baseline has (`unmeasured`)."""
        short = self.count_a < self.min_sample or self.count_b < self.min_sample
        return short or bool(self.unmeasured)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for `--json` and gate details)."""
        return {
            "min_sample": self.min_sample,
            "alpha": self.alpha,
            "count_a": self.count_a,
            "count_b": self.count_b,
            "insufficient": self.insufficient,
            "unmeasured": [m.metric for m in self.unmeasured],
            "regressions": [m.metric for m in self.regressions],
            "metrics": [m.to_dict() for m in self.metrics],
        }


def compare_samples(
    a: Sample,
    b: Sample,
    *,
    min_sample: int = 10,
    alpha: float = 0.05,
    margins: Margins = Margins(),
) -> Comparison:
    """Compare baseline `a` with candidate `b` on every metric.

    Scores and execution time use the two-sided Mann-Whitney U test, rates a pooled two-proportion
    z-test. A metric with fewer than `min_sample` values on either side is reported with its
    figures but `insufficient_data=True`, no p-value, no effect size and never `worse`. A
    difference within `margins` is never `worse` either.
    """
    if min_sample < 1:
        # Both tests need at least one value per side.
        raise ValueError(f"min_sample must be at least 1, got {min_sample}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be between 0 and 1 (exclusive), got {alpha}")

    continuous: list[tuple[str, str, Sequence[float | None], Sequence[float | None]]] = [
        ("pattern_fidelity", SCORE, a.pattern_fidelity, b.pattern_fidelity),
        ("outcome_quality", SCORE, a.outcome_quality, b.outcome_quality),
        ("execution_time_ms", TIME, a.execution_time_ms, b.execution_time_ms),
    ]
    rates: list[tuple[str, Sequence[bool], Sequence[bool]]] = [
        ("exception_rate", a.exception, b.exception),
        ("false_positive_rate", a.false_positive, b.false_positive),
        ("false_negative_rate", a.false_negative, b.false_negative),
        ("critical_rate", a.critical, b.critical),
    ]
    metrics = [
        _compare_continuous(
            name, kind, values_a, values_b, min_sample=min_sample, alpha=alpha, margins=margins
        )
        for name, kind, values_a, values_b in continuous
    ]
    metrics += [
        _compare_rate(name, flags_a, flags_b, min_sample=min_sample, alpha=alpha, margins=margins)
        for name, flags_a, flags_b in rates
    ]
    return Comparison(
        metrics=metrics,
        min_sample=min_sample,
        alpha=alpha,
        count_a=a.count,
        count_b=b.count,
    )


def _compare_continuous(
    metric: str,
    kind: str,
    raw_a: Sequence[float | None],
    raw_b: Sequence[float | None],
    *,
    min_sample: int,
    alpha: float,
    margins: Margins,
) -> MetricComparison:
    values_a = _present(raw_a)
    values_b = _present(raw_b)
    mean_a = math.fsum(values_a) / len(values_a) if values_a else None
    mean_b = math.fsum(values_b) / len(values_b) if values_b else None
    difference = mean_b - mean_a if mean_a is not None and mean_b is not None else None
    insufficient = len(values_a) < min_sample or len(values_b) < min_sample

    p_value: float | None = None
    effect: float | None = None
    if not insufficient:
        p_value, effect = _mann_whitney(values_a, values_b)

    worse = False
    if p_value is not None and effect is not None and p_value < alpha:
        # The direction comes from the rank-biserial correlation, not the means: the test is about
        # which side tends to be larger, and a few outliers can pull the means the other way.
        worse = effect < 0 if kind == SCORE else effect > 0
        assert mean_a is not None and mean_b is not None  # (a p-value needs values)
        worse = worse and margins.exceeded(kind, mean_a, mean_b)

    return MetricComparison(
        metric=metric,
        kind=kind,
        a=mean_a,
        b=mean_b,
        difference=difference,
        n_a=len(values_a),
        n_b=len(values_b),
        test=MANN_WHITNEY,
        p_value=p_value,
        effect_size=effect,
        effect_size_name=RANK_BISERIAL,
        insufficient_data=insufficient,
        worse=worse,
    )


def _mann_whitney(values_a: list[float], values_b: list[float]) -> tuple[float | None, float]:
    """Two-sided p-value and rank-biserial correlation (positive: B tends to be larger)."""
    first = values_a[0]
    if all(v == first for v in values_a) and all(v == first for v in values_b):
        # Nothing to rank: the tie-corrected variance is zero, which some scipy versions turn
        # into NaN with a warning. Identical samples are as alike as samples can be.
        return 1.0, 0.0

    u_b, p_value = _u_test(values_b, values_a)
    # U of B counts the pairs where B is larger (ties count half), so U/(n_a·n_b) is
    # P(B > A) + ½·P(B = A), and 2·U/(n_a·n_b) − 1 is the rank-biserial correlation.
    effect = 2.0 * u_b / (len(values_a) * len(values_b)) - 1.0
    return (p_value if math.isfinite(p_value) else None), effect


EXACT_UP_TO = 400  # the largest other sample the exact U distribution is computed against (~50 ms)


def _u_test(x: list[float], y: list[float]) -> tuple[float, float]:
    """U of `x` and the two-sided p-value of the Mann-Whitney U test, as scipy's
    `mannwhitneyu(x, y, method="auto")` gives them.

    scipy's "auto" is the exact distribution only when a sample is small (≤ 8) and nothing ties,
    and otherwise the normal approximation with tie and continuity corrections. That
    approximation is computed here: importing scipy.stats costs over a second, more than a whole
    `skillstage status`. Unlike scipy, the exact distribution is also left out when the other
    sample is large (over `EXACT_UP_TO`): its cost grows with it (8 against 10,000 values took
    close to a minute), and by then the approximation agrees with it to a few percent."""
    n1, n2 = len(x), len(y)
    if min(n1, n2) <= 8 and max(n1, n2) <= EXACT_UP_TO and len(set(x) | set(y)) == n1 + n2:
        from scipy.stats import mannwhitneyu

        result = mannwhitneyu(x, y, alternative="two-sided", method="exact")
        return float(result.statistic), float(result.pvalue)
    # Ranks by distinct value: scores take a handful of values (heavy ties), times many.
    count_x, count_y = Counter(x), Counter(y)
    n = n1 + n2
    rank_sum_x = 0.0
    ties = 0.0
    ranked_before = 0  # values ranked before this one
    for value in sorted(count_x.keys() | count_y.keys()):
        in_x = count_x.get(value, 0)
        size = in_x + count_y.get(value, 0)
        # the tie group's average rank, 1-based
        rank_sum_x += in_x * (ranked_before + (size + 1) / 2)
        ties += size**3 - size
        ranked_before += size
    u1 = rank_sum_x - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    spread = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    if spread == 0:
        return u1, 1.0
    z = (max(u1, n1 * n2 - u1) - mean - 0.5) / spread
    return u1, min(1.0, math.erfc(z / math.sqrt(2)))


def _compare_rate(
    metric: str,
    flags_a: Sequence[bool],
    flags_b: Sequence[bool],
    *,
    min_sample: int,
    alpha: float,
    margins: Margins,
) -> MetricComparison:
    n_a, n_b = len(flags_a), len(flags_b)
    hits_a, hits_b = sum(1 for f in flags_a if f), sum(1 for f in flags_b if f)
    rate_a = hits_a / n_a if n_a else None
    rate_b = hits_b / n_b if n_b else None
    difference = rate_b - rate_a if rate_a is not None and rate_b is not None else None
    insufficient = n_a < min_sample or n_b < min_sample

    p_value: float | None = None
    effect: float | None = None
    if not insufficient:
        p_value, effect = _two_proportion_z(hits_a, n_a, hits_b, n_b)

    worse = p_value is not None and difference is not None and p_value < alpha and difference > 0
    if worse:
        assert rate_a is not None and rate_b is not None
        worse = margins.exceeded(RATE, rate_a, rate_b)
    return MetricComparison(
        metric=metric,
        kind=RATE,
        a=rate_a,
        b=rate_b,
        difference=difference,
        n_a=n_a,
        n_b=n_b,
        test=TWO_PROPORTION_Z,
        p_value=p_value,
        effect_size=effect,
        effect_size_name=COHEN_H,
        insufficient_data=insufficient,
        worse=worse,
    )


def _two_proportion_z(hits_a: int, n_a: int, hits_b: int, n_b: int) -> tuple[float, float]:
    """Two-sided p-value of the pooled two-proportion z-test, and Cohen's h (positive: B higher)."""
    pooled = (hits_a + hits_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        # Both rates are 0 (or both 1): the standard error is zero and the test undefined, but
        # the samples agree perfectly, so there is no evidence of a difference.
        return 1.0, 0.0

    rate_a, rate_b = hits_a / n_a, hits_b / n_b
    standard_error = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    z = (rate_b - rate_a) / standard_error
    p_value = math.erfc(abs(z) / math.sqrt(2))  # 2·(1 − Φ(|z|))
    cohen_h = 2.0 * math.asin(math.sqrt(rate_b)) - 2.0 * math.asin(math.sqrt(rate_a))
    return min(p_value, 1.0), cohen_h


def _present(values: Sequence[float | None]) -> list[float]:
    # NaN is treated as missing too: it would poison the mean and the ranks alike.
    return [float(v) for v in values if v is not None and v == v]  # v != v: NaN


def _round(value: float | None) -> float | None:
    """Round to 6 significant digits; None for missing or non-finite values (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{_SIGNIFICANT_DIGITS}g}")
