"""Tests for the statistical comparison of two skill versions (skillstage.metrics.compare)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from skillstage.metrics.compare import (
    COHEN_H,
    MANN_WHITNEY,
    RANK_BISERIAL,
    TWO_PROPORTION_Z,
    Comparison,
    Margins,
    MetricComparison,
    Sample,
    at_least,
    below,
    compare_samples,
    more_than,
)


def make_sample(
    n: int,
    *,
    fidelity: Sequence[float | None] | None = None,
    quality: Sequence[float | None] | None = None,
    time_ms: Sequence[float | None] | None = None,
    exceptions: int = 0,
    false_positives: int = 0,
    false_negatives: int = 0,
    criticals: int = 0,
) -> Sample:
    """A sample of `n` executions; unspecified scores are a constant, rate counts the first k."""

    def flags(k: int) -> list[bool]:
        return [i < k for i in range(n)]

    return Sample(
        pattern_fidelity=list(fidelity) if fidelity is not None else [0.9] * n,
        outcome_quality=list(quality) if quality is not None else [0.8] * n,
        execution_time_ms=list(time_ms) if time_ms is not None else [100.0] * n,
        exception=flags(exceptions),
        false_positive=flags(false_positives),
        false_negative=flags(false_negatives),
        critical=flags(criticals),
    )


def normal(seed: int, n: int, mean: float, sd: float, low: float, high: float) -> list[float]:
    rng = random.Random(seed)
    return [min(high, max(low, rng.gauss(mean, sd))) for _ in range(n)]


def metric(comparison: Comparison, name: str) -> MetricComparison:
    (found,) = [m for m in comparison.metrics if m.metric == name]
    return found


def test_clearly_worse_fidelity_is_a_regression() -> None:
    a = make_sample(50, fidelity=normal(1, 50, 0.95, 0.03, 0.0, 1.0))
    b = make_sample(50, fidelity=normal(2, 50, 0.70, 0.08, 0.0, 1.0))

    comparison = compare_samples(a, b)
    fidelity = metric(comparison, "pattern_fidelity")

    assert fidelity.kind == "score"
    assert fidelity.test == MANN_WHITNEY
    assert fidelity.effect_size_name == RANK_BISERIAL
    assert fidelity.worse
    assert fidelity.p_value is not None and fidelity.p_value < 0.05
    assert fidelity.difference is not None and fidelity.difference < -0.15
    assert fidelity.a is not None and fidelity.a == pytest.approx(0.95, abs=0.02)
    assert fidelity.b is not None and fidelity.b == pytest.approx(0.70, abs=0.04)
    # B tends to be smaller: the rank-biserial correlation is negative, near -1 for disjoint data.
    assert fidelity.effect_size is not None and fidelity.effect_size < -0.9
    assert comparison.regressions == [fidelity]
    assert not comparison.insufficient


def test_better_fidelity_is_significant_but_not_worse() -> None:
    a = make_sample(50, fidelity=normal(2, 50, 0.70, 0.08, 0.0, 1.0))
    b = make_sample(50, fidelity=normal(1, 50, 0.95, 0.03, 0.0, 1.0))

    fidelity = metric(compare_samples(a, b), "pattern_fidelity")

    assert fidelity.p_value is not None and fidelity.p_value < 0.05
    assert fidelity.effect_size is not None and fidelity.effect_size > 0.9
    assert not fidelity.worse


def test_identical_distributions_are_not_flagged() -> None:
    fidelity = normal(7, 60, 0.9, 0.05, 0.0, 1.0)
    quality = normal(8, 60, 0.8, 0.1, 0.0, 1.0)
    time_ms = normal(9, 60, 200.0, 30.0, 0.0, math.inf)
    a = make_sample(60, fidelity=fidelity, quality=quality, time_ms=time_ms, exceptions=5)
    b = make_sample(60, fidelity=fidelity, quality=quality, time_ms=time_ms, exceptions=5)

    comparison = compare_samples(a, b)

    assert comparison.regressions == []
    for m in comparison.metrics:
        assert m.difference == pytest.approx(0.0)
        assert m.p_value == pytest.approx(1.0)
        assert m.effect_size == pytest.approx(0.0)


def test_same_distribution_different_draws_are_not_flagged() -> None:
    a = make_sample(80, fidelity=normal(11, 80, 0.9, 0.05, 0.0, 1.0))
    b = make_sample(80, fidelity=normal(12, 80, 0.9, 0.05, 0.0, 1.0))

    fidelity = metric(compare_samples(a, b), "pattern_fidelity")

    assert fidelity.p_value is not None and fidelity.p_value > 0.05
    assert not fidelity.worse


def test_slower_candidate_is_worse_and_faster_one_is_not() -> None:
    fast = normal(21, 40, 100.0, 10.0, 0.0, math.inf)
    slow = normal(22, 40, 160.0, 15.0, 0.0, math.inf)

    slower = metric(
        compare_samples(make_sample(40, time_ms=fast), make_sample(40, time_ms=slow)),
        "execution_time_ms",
    )
    faster = metric(
        compare_samples(make_sample(40, time_ms=slow), make_sample(40, time_ms=fast)),
        "execution_time_ms",
    )

    assert slower.kind == "time"
    assert slower.worse
    assert slower.difference is not None and slower.difference > 0
    assert slower.effect_size is not None and slower.effect_size > 0
    # Equally significant, but lower time is better, so a faster candidate is no regression.
    assert faster.p_value is not None and faster.p_value < 0.05
    assert faster.difference is not None and faster.difference < 0
    assert not faster.worse


def test_exception_rate_rise_is_worse_with_positive_cohen_h() -> None:
    comparison = compare_samples(make_sample(100), make_sample(100, exceptions=20))
    rate = metric(comparison, "exception_rate")

    assert rate.kind == "rate"
    assert rate.test == TWO_PROPORTION_Z
    assert rate.effect_size_name == COHEN_H
    assert (rate.a, rate.b) == (0.0, 0.2)
    assert rate.difference == pytest.approx(0.2)
    assert (rate.n_a, rate.n_b) == (100, 100)
    assert rate.worse
    # Pooled p = 0.1: z = 0.2 / sqrt(0.1 * 0.9 * 2 / 100) = 4.714...
    z = 0.2 / math.sqrt(0.1 * 0.9 * 0.02)
    assert rate.p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-9)
    assert rate.effect_size == pytest.approx(2 * math.asin(math.sqrt(0.2)), rel=1e-12)
    assert rate.effect_size is not None and rate.effect_size > 0
    assert [m.metric for m in comparison.regressions] == ["exception_rate"]


def test_falling_rate_is_not_worse_and_cohen_h_is_negative() -> None:
    rate = metric(
        compare_samples(make_sample(100, criticals=20), make_sample(100)), "critical_rate"
    )

    assert rate.p_value is not None and rate.p_value < 0.05
    assert rate.effect_size is not None and rate.effect_size < 0
    assert not rate.worse


def test_rates_all_zero_or_all_one_have_p_value_one() -> None:
    everything_fails = 30
    comparison = compare_samples(
        make_sample(30, false_negatives=everything_fails),
        make_sample(30, false_negatives=everything_fails),
    )

    zero = metric(comparison, "false_positive_rate")
    one = metric(comparison, "false_negative_rate")

    assert (zero.a, zero.b, zero.p_value, zero.effect_size) == (0.0, 0.0, 1.0, 0.0)
    assert (one.a, one.b, one.p_value, one.effect_size) == (1.0, 1.0, 1.0, 0.0)
    assert not zero.worse and not one.worse


def test_below_min_sample_is_insufficient_and_never_worse() -> None:
    a = make_sample(5, fidelity=[0.99] * 5)
    b = make_sample(5, fidelity=[0.10] * 5, exceptions=5)

    comparison = compare_samples(a, b, min_sample=10)

    assert comparison.insufficient
    assert comparison.regressions == []
    for m in comparison.metrics:
        assert m.insufficient_data
        assert m.p_value is None
        assert m.effect_size is None
        assert not m.worse
    # The figures are still reported.
    fidelity = metric(comparison, "pattern_fidelity")
    assert (fidelity.n_a, fidelity.n_b) == (5, 5)
    assert fidelity.a == pytest.approx(0.99)
    assert fidelity.b == pytest.approx(0.10)
    assert fidelity.difference == pytest.approx(-0.89)
    assert metric(comparison, "exception_rate").b == 1.0


def test_min_sample_applies_per_metric_to_values_present() -> None:
    # Enough executions, but outcome quality was scored on only 4 of B's.
    quality_b: list[float | None] = [0.1, 0.1, 0.1, 0.1] + [None] * 16
    comparison = compare_samples(
        make_sample(20, quality=[0.9] * 20), make_sample(20, quality=quality_b), min_sample=10
    )

    quality = metric(comparison, "outcome_quality")
    fidelity = metric(comparison, "pattern_fidelity")

    # The baseline has quality scores enough and B has not: nothing can be said about B's
    # quality, so the comparison as a whole is short of data (a gate must not say "none worse").
    assert comparison.insufficient and comparison.unmeasured == [quality]
    assert quality.insufficient_data and quality.p_value is None and not quality.worse
    assert (quality.n_a, quality.n_b) == (20, 4)
    assert not fidelity.insufficient_data and fidelity.p_value is not None
    # A metric neither side recorded enough of leaves the comparison whole.
    unscored: list[float | None] = [None] * 20
    neither = compare_samples(
        make_sample(20, quality=unscored), make_sample(20, quality=unscored), min_sample=10
    )
    assert not neither.insufficient and neither.unmeasured == []


def test_none_values_are_skipped() -> None:
    fidelity_a: list[float | None] = [0.9, None, 0.8, None, 0.7] * 4
    fidelity_b: list[float | None] = [None] * 20
    time_b: list[float | None] = [50.0, None] * 10
    comparison = compare_samples(
        make_sample(20, fidelity=fidelity_a),
        make_sample(20, fidelity=fidelity_b, time_ms=time_b),
        min_sample=5,
    )

    fidelity = metric(comparison, "pattern_fidelity")
    time_ms = metric(comparison, "execution_time_ms")

    assert (fidelity.n_a, fidelity.n_b) == (12, 0)
    assert fidelity.a == pytest.approx(0.8)
    assert fidelity.b is None and fidelity.difference is None
    assert fidelity.insufficient_data and not fidelity.worse
    assert (time_ms.n_a, time_ms.n_b) == (20, 10)
    assert time_ms.b == 50.0


def test_nan_counts_as_missing() -> None:
    fidelity_b = [0.5] * 10 + [math.nan] * 5
    fidelity = metric(
        compare_samples(make_sample(15), make_sample(15, fidelity=fidelity_b)), "pattern_fidelity"
    )

    assert fidelity.n_b == 10
    assert fidelity.b == 0.5


@pytest.mark.parametrize("n", [3, 12, 40])
def test_all_equal_values_do_not_crash(n: int) -> None:
    comparison = compare_samples(make_sample(n), make_sample(n), min_sample=3)

    for m in comparison.metrics:
        assert m.p_value == 1.0
        assert m.effect_size == 0.0
        assert not m.worse


def test_each_side_constant_but_different_is_tested() -> None:
    # Ties within each side but not across: the rank test is defined and must see the gap.
    fidelity = metric(
        compare_samples(make_sample(20, fidelity=[1.0] * 20), make_sample(20, fidelity=[0.5] * 20)),
        "pattern_fidelity",
    )

    assert fidelity.p_value is not None and fidelity.p_value < 1e-6
    assert fidelity.effect_size == -1.0
    assert fidelity.worse


def test_a_significant_difference_within_its_margin_is_not_worse() -> None:
    # Every difference here is significant, and too small to matter by the default margins.
    baseline = make_sample(2000, fidelity=[1.0] * 2000, time_ms=[4.69] * 2000)
    candidate = make_sample(2000, fidelity=[0.99] * 2000, time_ms=[5.0] * 2000, exceptions=30)
    by_default = compare_samples(baseline, candidate)
    for name in ("pattern_fidelity", "execution_time_ms", "exception_rate"):
        found = metric(by_default, name)
        assert found.p_value is not None and found.p_value < 0.05, name
        assert not found.worse, name
    assert by_default.regressions == []
    # With no margins the same differences are regressions; just beyond them, too.
    strict = compare_samples(baseline, candidate, margins=Margins(0, 1, 0))
    assert [m.metric for m in strict.regressions] == [
        "pattern_fidelity",
        "execution_time_ms",
        "exception_rate",
    ]
    beyond = Margins(score=0.0099, time_ratio=1.06, rate=0.0149)
    assert len(compare_samples(baseline, candidate, margins=beyond).regressions) == 3


@pytest.mark.parametrize(
    ("metric_name", "baseline", "candidate"),
    [
        # exactly 0.02 worse, which floats make 0.020000000000000004 or …018; and exactly 1.5x
        (
            "false_positive_rate",
            make_sample(10_000, false_positives=300),
            make_sample(10_000, false_positives=500),
        ),
        ("pattern_fidelity", make_sample(500, fidelity=[0.92] * 500), make_sample(500)),
        (
            "outcome_quality",
            make_sample(500, quality=[0.87] * 500),
            make_sample(500, quality=[0.85] * 500),
        ),
        (
            "execution_time_ms",
            make_sample(500, time_ms=[0.2] * 500),
            make_sample(500, time_ms=[0.3] * 500),
        ),
    ],
)
def test_a_difference_exactly_at_its_margin_is_not_worse(
    metric_name: str, baseline: Sample, candidate: Sample
) -> None:
    found = metric(compare_samples(baseline, candidate), metric_name)
    assert found.p_value is not None and found.p_value < 1e-6  # significant: only the margin
    assert not found.worse


def test_thresholds_count_a_figure_on_them_as_on_them() -> None:
    assert sum([0.85] * 100) / 100 < 0.85  # what plain float arithmetic gives
    assert at_least(sum([0.85] * 100) / 100, 0.85)
    assert not at_least(0.8499, 0.85)
    assert not below(0.05 - 1e-17, 0.05) and below(0.0499, 0.05)
    assert not more_than(0.05 - 0.03, 0.02) and more_than(0.0201, 0.02)


def test_a_few_values_against_many_use_the_normal_approximation() -> None:
    # scipy's exact distribution for 8 tie-free values against 10,000 took close to a minute.
    rng = random.Random(7)
    few = [rng.random() for _ in range(8)]
    many = [rng.random() for _ in range(10_000)]
    found = metric(
        compare_samples(
            make_sample(8, time_ms=few), make_sample(10_000, time_ms=many), min_sample=8
        ),
        "execution_time_ms",
    )
    expected = mannwhitneyu(many, few, alternative="two-sided", method="asymptotic")
    assert found.p_value == pytest.approx(float(expected.pvalue), rel=1e-9)


@pytest.mark.parametrize(
    ("n_a", "n_b", "seed"),
    [(50, 50, 31), (12, 9, 32), (6, 7, 33), (30, 80, 34)],  # (6, 7) uses the exact method
)
def test_p_values_agree_with_scipy(n_a: int, n_b: int, seed: int) -> None:
    values_a = normal(seed, n_a, 0.85, 0.1, 0.0, 1.0)
    values_b = normal(seed + 100, n_b, 0.80, 0.1, 0.0, 1.0)
    fidelity = metric(
        compare_samples(
            make_sample(n_a, fidelity=list(values_a)),
            make_sample(n_b, fidelity=list(values_b)),
            min_sample=5,
        ),
        "pattern_fidelity",
    )

    expected = mannwhitneyu(values_a, values_b, alternative="two-sided", method="auto")
    assert fidelity.p_value == pytest.approx(float(expected.pvalue), rel=1e-12)
    # scipy's U is for its first argument (A): r = 1 - 2·U_A/(n_a·n_b), positive when B is larger.
    expected_r = 1.0 - 2.0 * float(expected.statistic) / (n_a * n_b)
    assert fidelity.effect_size == pytest.approx(expected_r, rel=1e-12, abs=1e-12)


def test_to_dict_is_json_serialisable_and_rounded() -> None:
    a = make_sample(30, fidelity=normal(41, 30, 0.9, 0.05, 0.0, 1.0), exceptions=1)
    b = make_sample(
        30,
        fidelity=[None] * 30,  # no values: b, difference and p_value must be None, not NaN
        time_ms=normal(42, 30, 173.456789, 5.0, 0.0, math.inf),
        exceptions=7,
    )
    comparison = compare_samples(a, b)

    data = comparison.to_dict()
    text = json.dumps(data, allow_nan=False)
    loaded = json.loads(text)

    assert loaded["min_sample"] == 10
    assert loaded["alpha"] == 0.05
    assert (loaded["count_a"], loaded["count_b"]) == (30, 30)
    # B recorded no fidelity where A did: short of data, whatever else it shows.
    assert (loaded["insufficient"], loaded["unmeasured"]) == (True, ["pattern_fidelity"])
    # B is slower than A's constant 100 ms (past the 1.5x margin), and raises more exceptions.
    assert loaded["regressions"] == ["execution_time_ms", "exception_rate"]
    assert [m["metric"] for m in loaded["metrics"]] == [
        "pattern_fidelity",
        "outcome_quality",
        "execution_time_ms",
        "exception_rate",
        "false_positive_rate",
        "false_negative_rate",
        "critical_rate",
    ]
    fidelity = loaded["metrics"][0]
    assert fidelity["b"] is None and fidelity["difference"] is None
    assert fidelity["p_value"] is None and fidelity["insufficient_data"] is True
    time_ms = loaded["metrics"][2]
    for key in ("a", "b", "difference", "p_value", "effect_size"):
        value = time_ms[key]
        assert isinstance(value, float)
        assert value == float(f"{value:.6g}")
    exception = loaded["metrics"][3]
    assert exception["b"] == pytest.approx(7 / 30, rel=1e-5)
    assert exception["b"] != 7 / 30  # rounded, not the full double
    assert exception["worse"] is True


def test_sample_rejects_lists_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="exception=4"):
        Sample(
            pattern_fidelity=[0.9] * 5,
            outcome_quality=[0.9] * 5,
            execution_time_ms=[1.0] * 5,
            exception=[False] * 4,
            false_positive=[False] * 5,
            false_negative=[False] * 5,
            critical=[False] * 5,
        )


def test_sample_count_is_the_number_of_executions() -> None:
    assert make_sample(17, fidelity=[None] * 17).count == 17


@pytest.mark.parametrize(("min_sample", "alpha"), [(0, 0.05), (10, 0.0), (10, 1.0)])
def test_invalid_thresholds_are_refused(min_sample: int, alpha: float) -> None:
    with pytest.raises(ValueError):
        compare_samples(make_sample(10), make_sample(10), min_sample=min_sample, alpha=alpha)


def test_importing_the_module_does_not_import_scipy() -> None:
    # The CLI imports this module on start; scipy would add hundreds of milliseconds.
    code = "import sys, skillstage.metrics.compare; print('scipy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 12), min_size=1, max_size=60),
    st.lists(st.integers(0, 12), min_size=1, max_size=60),
    st.booleans(),
)
def test_the_u_test_agrees_with_scipy_on_any_samples(
    a: list[int], b: list[int], continuous: bool
) -> None:
    from skillstage.metrics.compare import _u_test

    # Integers make ties likely; scaled and offset they become (mostly) distinct values.
    x = [v + i / 997 for i, v in enumerate(b)] if continuous else [float(v) for v in b]
    y = [v + i / 991 for i, v in enumerate(a)] if continuous else [float(v) for v in a]
    if len(set(x) | set(y)) == 1:
        return  # no ranking at all: handled before the test is called
    expected = mannwhitneyu(x, y, alternative="two-sided", method="auto")
    u, p = _u_test(x, y)
    assert u == pytest.approx(float(expected.statistic))
    assert p == pytest.approx(float(expected.pvalue), rel=1e-9, abs=1e-12)
