"""Tests of ddpm_helpers.measuring.intervals: each interval against a closed form or a simulation."""

import math

import numpy as np
import pytest

from ddpm_helpers.measuring import intervals


def test_jackknife_of_the_mean_is_the_classical_standard_error():
    # Delete-one jackknife (groups = n) of the mean gives exactly s / sqrt(n), and with Student's
    # t quantile (n - 1 degrees of freedom) the classical t interval.
    x = np.random.default_rng(0).standard_normal(50)
    interval = intervals.jackknife_interval(np.mean, x, groups=50, level=0.95)
    half = 2.0095752371292392 * x.std(ddof=1) / math.sqrt(len(x))  # t quantile, 49 degrees of freedom
    assert interval.value == pytest.approx(x.mean())
    assert interval.high - interval.value == pytest.approx(half, rel=1e-9)


def test_jackknife_covers_the_spread_over_repeated_draws():
    # The grouped jackknife's standard error of a non-linear statistic (a variance) matches the
    # spread of that statistic over independent data sets.
    rng = np.random.default_rng(1)
    repeats = [rng.standard_normal(400) for _ in range(200)]
    spread = np.std([np.var(x) for x in repeats])
    ses = [(intervals.jackknife_interval(np.var, x, groups=16).high - np.var(x)) / 2.131449545559776
           for x in repeats[:40]]  # t quantile, 15 degrees of freedom
    assert np.mean(ses) == pytest.approx(spread, rel=0.2)


def test_wilson_interval_known_values():
    # 0 of 10: upper limit z^2 / (n + z^2) = 0.2775; 5 of 10: 0.2366 to 0.7634 (95 %).
    none = intervals.proportion_interval(0, 10)
    assert none.low == 0.0 and none.high == pytest.approx(0.27754, abs=1e-4)
    half = intervals.proportion_interval(5, 10)
    assert half.low == pytest.approx(0.23659, abs=1e-4)
    assert half.high == pytest.approx(0.76341, abs=1e-4)
    assert half.value == 0.5
    for n in (10, 250, 1000):  # all successes: the interval ends exactly at 1
        everything = intervals.proportion_interval(n, n)
        assert everything.high == 1.0 and everything.low < 1.0


def test_mean_interval_uses_student_t():
    values = [1.0, 2.0, 3.0]
    interval = intervals.mean_interval(values, level=0.95)
    half = 4.302652729911275 * 1.0 / math.sqrt(3)  # t_{0.975, 2} * s / sqrt(k)
    assert interval.value == 2.0
    assert interval.high == pytest.approx(2.0 + half)


def test_bootstrap_interval_of_a_mean_is_near_the_normal_one():
    x = np.random.default_rng(2).standard_normal(500)
    interval = intervals.bootstrap_interval(np.mean, x, repeats=400, seed=0)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert interval.high - interval.low == pytest.approx(2 * half, rel=0.2)
    assert interval.contains(x.mean())


def test_verdict_reads_the_interval_of_the_difference():
    assert intervals.verdict(intervals.Interval(-0.3, -0.5, -0.1)) == "clearly lower"
    assert intervals.verdict(intervals.Interval(0.3, 0.1, 0.5)) == "clearly higher"
    assert intervals.verdict(intervals.Interval(0.3, -0.1, 0.7), same="n/r") == "n/r"
    assert intervals.Interval(1.0, 0.9, 1.1).scaled(2.0).text() == "2.00 [1.80, 2.20]"


def _rejections(test, repeats=400, shift=0.0, seed=0):
    """Share of ``repeats`` simulated experiments in which ``test`` calls a difference."""
    rng = np.random.default_rng(seed)
    calls = 0
    for _ in range(repeats):
        shared = rng.normal(size=64)  # what paired samples have in common (their starting noise)
        a = shared + 0.3 * rng.normal(size=64) + shift
        b = shared + 0.3 * rng.normal(size=64)
        calls += test(a, b)
    return calls / repeats


def test_paired_difference_is_a_5_percent_test_and_uses_the_pairing():
    def paired(a, b):
        return intervals.verdict(intervals.paired_difference(np.mean, a, b)) != "not resolved at this sample size"

    def overlap(a, b):  # the old rule: two separate intervals that do not overlap
        ia, ib = (intervals.jackknife_interval(np.mean, x) for x in (a, b))
        return ia.separated_from(ib)

    assert 0.02 <= _rejections(paired) <= 0.09  # about 5% when nothing differs
    # A shift of about 2.4 standard errors of the paired difference: found most of the time by
    # the paired test, almost never by non-overlap (the shared part makes each interval wide).
    assert _rejections(paired, shift=0.13) > 0.5 > 0.1 > _rejections(overlap, shift=0.13)


def test_independent_difference_is_a_5_percent_test():
    rng = np.random.default_rng(1)
    calls, overlaps = 0, 0
    for _ in range(2000):
        a, b = (intervals.mean_interval(rng.normal(size=30)) for _ in range(2))
        calls += not intervals.independent_difference(a, b).contains(0.0)
        overlaps += a.separated_from(b)
    assert 0.03 <= calls / 2000 <= 0.08
    assert overlaps / 2000 < 0.015  # non-overlap of 95% intervals: a test at well under 1%


def test_paired_mean_difference_is_the_t_interval_of_the_differences():
    a, b = np.array([1.0, 2.0, 3.5, 4.0]), np.array([0.5, 1.0, 3.0, 3.0])
    d = intervals.paired_mean_difference(a, b)
    assert (d.value, d.low, d.high) == pytest.approx(
        (intervals.mean_interval(a - b).value, intervals.mean_interval(a - b).low,
         intervals.mean_interval(a - b).high))
    with pytest.raises(ValueError, match="Paired"):
        intervals.paired_mean_difference(a, b[:3])
    with pytest.raises(ValueError, match="Paired"):
        intervals.paired_difference(np.mean, a, b[:3])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="successes"):
        intervals.proportion_interval(11, 10)
    with pytest.raises(ValueError, match="groups"):
        intervals.jackknife_interval(np.mean, np.zeros(5), groups=6)
    with pytest.raises(ValueError, match="at least 2"):
        intervals.mean_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        intervals.proportion_interval(1, 2, level=1.5)


class _StubEvaluator:
    """What fd_ratio_interval and fd_ratio_difference use of an Evaluator: pixels as features."""

    def __init__(self, reference):
        flat = reference.reshape(len(reference), -1)
        self.held_out_stats = (flat.mean(0), np.cov(flat, rowvar=False))
        self.classifier = type("Features", (), {"features": staticmethod(
            lambda x: np.asarray(x, np.float64).reshape(len(x), -1))})()

    def references(self, n):
        return np.full(3, 2.0), None


def test_fd_ratio_difference_is_the_difference_of_the_two_scores():
    rng = np.random.default_rng(2)
    evaluator = _StubEvaluator(np.tanh(rng.normal(size=(400, 2, 2, 1))))
    a = np.tanh(rng.normal(size=(64, 2, 2, 1)))
    b = np.tanh(a + 0.3 * rng.normal(size=a.shape))  # paired with a
    d = intervals.fd_ratio_difference(evaluator, a, b)
    single = [intervals.fd_ratio_interval(evaluator, x).value for x in (a, b)]
    assert d.value == pytest.approx(single[0] - single[1])
    same = intervals.fd_ratio_difference(evaluator, a, a)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)


def test_paired_fd_difference_variance_is_var_a_plus_var_b_minus_twice_the_covariance():
    # The replicates of the paired difference are the differences of the two sets' replicates
    # (the same groups are left out of both), so se_d^2 = se_a^2 + se_b^2 - 2 cov exactly; and
    # the replicates give the intervals' half-widths.
    from scipy.stats import t as student

    rng = np.random.default_rng(3)
    evaluator = _StubEvaluator(np.tanh(rng.normal(size=(400, 2, 2, 1))))
    a = np.tanh(rng.normal(size=(96, 2, 2, 1)))
    b = np.tanh(a + 0.5 * rng.normal(size=a.shape))  # paired with a: positively correlated
    reps = [intervals.fd_ratio_replicates(evaluator, x) for x in (a, b)]
    g = len(reps[0])

    def jack_cov(x, y):
        return (g - 1) / g * np.sum((x - x.mean()) * (y - y.mean()))

    var_a, var_b, cov = jack_cov(*reps[:1] * 2), jack_cov(*reps[1:] * 2), jack_cov(*reps)
    d = intervals.fd_ratio_difference(evaluator, a, b)
    t = student.ppf(0.975, g - 1)
    assert ((d.high - d.low) / (2 * t)) ** 2 == pytest.approx(var_a + var_b - 2 * cov, rel=1e-9)
    single = intervals.fd_ratio_interval(evaluator, a)
    assert ((single.high - single.low) / (2 * t)) ** 2 == pytest.approx(var_a, rel=1e-9)
    assert cov > 0  # the pairing helps here: the difference is narrower than var_a + var_b
    assert (d.high - d.low) / 2 < t * np.sqrt(var_a + var_b)


def test_kid_interval_is_unbiased_for_sets_of_the_same_distribution():
    # Two independent sets from one distribution: the unbiased MMD^2 sits at 0 within its
    # interval, at a small n where the biased estimate (diagonal kept) would sit well above it.
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((400, 8))
    same = intervals.kid_interval_of_features(rng.standard_normal((64, 8)), reference)
    assert same.contains(0.0)
    shifted = intervals.kid_interval_of_features(rng.standard_normal((64, 8)) + 0.5, reference)
    assert shifted.low > 0 and shifted.value > 10 * abs(same.value)


def test_paired_ratio_reduces_to_the_mean_when_the_denominator_is_fixed_and_covers():
    a = np.array([1.0, 2.0, 3.5, 4.0, 2.5])
    r = intervals.paired_ratio(a, np.full(5, 2.0))
    m = intervals.mean_interval(a)
    assert (r.value, r.low, r.high) == pytest.approx((m.value / 2, m.low / 2, m.high / 2))
    # Coverage: distances and floors that share a draw (positively correlated), true ratio 1.2.
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        shared = rng.normal(0, 0.3, 5)
        floors = 5 + shared + rng.normal(0, 0.2, 5)
        distances = 6 + 1.2 * shared + rng.normal(0, 0.2, 5)
        hits += intervals.paired_ratio(distances, floors).contains(1.2)
    assert 0.92 <= hits / 2000 <= 0.98
    with pytest.raises(ValueError, match="paired"):
        intervals.paired_ratio(a, a[:3])
