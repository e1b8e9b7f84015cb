"""Tests of ddpm_helpers.measuring.intervals: each interval against a closed form or a simulation."""

import math

import numpy as np
import pytest

from ddpm_helpers.measuring import intervals


def test_jackknife_of_the_mean_is_the_classical_standard_error():
    # Delete-one jackknife (groups = n) of the mean gives exactly s / sqrt(n).
    x = np.random.default_rng(0).standard_normal(50)
    interval = intervals.jackknife_interval(np.mean, x, groups=50, level=0.95)
    half = 1.959963984540054 * x.std(ddof=1) / math.sqrt(len(x))
    assert interval.value == pytest.approx(x.mean())
    assert interval.high - interval.value == pytest.approx(half, rel=1e-9)


def test_jackknife_covers_the_spread_over_repeated_draws():
    # The grouped jackknife's standard error of a non-linear statistic (a variance) matches the
    # spread of that statistic over independent data sets.
    rng = np.random.default_rng(1)
    repeats = [rng.standard_normal(400) for _ in range(200)]
    spread = np.std([np.var(x) for x in repeats])
    ses = [(intervals.jackknife_interval(np.var, x, groups=16).high - np.var(x)) / 1.96
           for x in repeats[:40]]
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


def test_verdict_calls_a_difference_only_when_intervals_separate():
    a = intervals.Interval(1.0, 0.9, 1.1)
    b = intervals.Interval(1.5, 1.3, 1.7)
    c = intervals.Interval(1.15, 1.05, 1.25)
    assert intervals.verdict(a, b) == "clearly lower"
    assert intervals.verdict(b, a) == "clearly higher"
    assert intervals.verdict(a, c) == "within sampling noise"
    assert a.scaled(2.0).text() == "2.00 (1.80 to 2.20)"


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="successes"):
        intervals.proportion_interval(11, 10)
    with pytest.raises(ValueError, match="groups"):
        intervals.jackknife_interval(np.mean, np.zeros(5), groups=6)
    with pytest.raises(ValueError, match="at least 2"):
        intervals.mean_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        intervals.proportion_interval(1, 2, level=1.5)
