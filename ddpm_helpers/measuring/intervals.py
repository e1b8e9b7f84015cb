"""Intervals for the book's quality numbers (chapters "Evaluation" and "Your turn").

A quality number measured on ``n`` samples would come out differently on another ``n`` samples
of the same sampler. Before two numbers are compared, each gets an interval that shows how far
it moves by chance alone, and a difference is called only when the intervals do not overlap
(:func:`verdict`). Four ways to get an interval, each where it fits:

- :func:`proportion_interval`: Wilson's score interval for a share (the confident share, the
  agreement with a requested digit): exact enough at every ``n`` and never outside [0, 1];
- :func:`jackknife_interval`: the delete-a-group jackknife, for statistics such as the Frechet
  distance, whose value depends on ``n`` (chapter "Evaluation", Eq. (9.2) (``eq-jackknife``));
- :func:`bootstrap_interval`: the percentile bootstrap, for averages over samples (diversity);
- :func:`mean_interval`: the t interval of a few repeated measurements (training or sampling
  seeds).

Why not the bootstrap everywhere: a bootstrap resample repeats some images and drops others, and
duplicates shrink the fitted covariance's effective sample size, so the Frechet distance of a
resample is biased upwards (by far more than its spread at ``n = 256``). The jackknife leaves
groups out instead of repeating samples.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

DEFAULT_LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """A measured ``value`` and the interval [``low``, ``high``] at confidence ``level``."""

    value: float
    low: float
    high: float
    level: float = DEFAULT_LEVEL
    method: str = ""

    def text(self, fmt: str = ".2f") -> str:
        """E.g. ``"1.25 (1.05 to 1.45)"``; ``fmt`` applies to all three numbers."""
        return (f"{format(self.value, fmt)} ({format(self.low, fmt)} to "
                f"{format(self.high, fmt)})")

    def __str__(self) -> str:
        return self.text()

    def scaled(self, factor: float) -> "Interval":
        """The interval of ``value * factor`` (``factor`` > 0), e.g. FD -> FD / floor."""
        if not factor > 0:
            raise ValueError(f"factor must be positive, got {factor}.")
        return dataclasses.replace(self, value=self.value * factor, low=self.low * factor,
                                   high=self.high * factor)

    def separated_from(self, other: "Interval") -> bool:
        """True when the two intervals do not overlap."""
        return self.low > other.high or self.high < other.low

    def contains(self, x: float) -> bool:
        """Whether ``x`` lies in the interval (ends included)."""
        return self.low <= x <= self.high


def _normal_quantile(level: float) -> float:
    from scipy.stats import norm

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}.")
    return float(norm.ppf(0.5 + level / 2.0))


def proportion_interval(successes: int, n: int, level: float = DEFAULT_LEVEL) -> Interval:
    """Wilson's score interval for a share ``successes / n`` (Wilson 1927)."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"Need 0 <= successes <= n and n >= 1, got {successes} of {n}.")
    z = _normal_quantile(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # min/max: round-off must not put p outside its own interval (at p = 0 or 1)
    low, high = min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))
    return Interval(p, low, high, level, "Wilson")


def jackknife_interval(statistic, data, *, groups: int = 16, level: float = DEFAULT_LEVEL,
                       seed: int = 0) -> Interval:
    """``statistic(data)`` with a delete-a-group jackknife interval.

    The rows of ``data`` are shuffled (``seed``) into ``groups`` groups; ``statistic`` is
    recomputed with each group left out, giving ``theta_1 .. theta_G``, and

        se^2 = (G - 1) / G * sum_g (theta_g - mean(theta))^2      (Eq. (9.2) (``eq-jackknife``))

    The interval is ``value +- z se`` around the value on all the data (not bias-corrected, so
    that it stays comparable with references measured at the same ``n``).
    """
    data = np.asarray(data)
    n = len(data)
    if not 2 <= groups <= n:
        raise ValueError(f"groups must lie between 2 and the number of rows ({n}), got {groups}.")
    value = float(statistic(data))
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, groups)
    thetas = np.array([float(statistic(data[np.setdiff1d(order, part)])) for part in parts])
    se = math.sqrt((groups - 1) / groups * np.sum((thetas - thetas.mean()) ** 2))
    z = _normal_quantile(level)
    return Interval(value, value - z * se, value + z * se, level, f"jackknife ({groups} groups)")


def bootstrap_interval(statistic, data, *, repeats: int = 200, level: float = DEFAULT_LEVEL,
                       seed: int = 0) -> Interval:
    """``statistic(data)`` with a percentile bootstrap interval (rows resampled with replacement)."""
    data = np.asarray(data)
    if repeats < 10:
        raise ValueError(f"repeats must be at least 10, got {repeats}.")
    rng = np.random.default_rng(seed)
    values = [float(statistic(data[rng.integers(0, len(data), len(data))])) for _ in range(repeats)]
    low, high = np.quantile(values, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(statistic(data)), float(low), float(high), level,
                    f"bootstrap ({repeats} resamples)")


def mean_interval(values, level: float = DEFAULT_LEVEL) -> Interval:
    """Mean of repeated measurements (e.g. several seeds) with Student's t interval."""
    from scipy.stats import t as student

    values = np.asarray(values, dtype=np.float64)
    k = len(values)
    if k < 2:
        raise ValueError(f"Need at least 2 repeated measurements, got {k}.")
    mean = float(values.mean())
    half = float(student.ppf(0.5 + level / 2, k - 1) * values.std(ddof=1) / math.sqrt(k))
    return Interval(mean, mean - half, mean + half, level, f"t interval over {k} runs")


def verdict(a: Interval, b: Interval, *, lower: str = "clearly lower",
            higher: str = "clearly higher", same: str = "within sampling noise") -> str:
    """The sentence for ``a`` compared with ``b``: ``lower`` or ``higher`` only when the
    intervals separate, else ``same``. The book glues the returned words into its prose."""
    if not a.separated_from(b):
        return same
    return lower if a.value < b.value else higher


def fd_ratio_interval(evaluator, images, *, groups: int = 16,
                      level: float = DEFAULT_LEVEL) -> Interval:
    """FD / floor of ``images`` with a jackknife interval over the images (chapter "Evaluation").

    ``evaluator`` is a :class:`ddpm_helpers.measuring.metrics.Evaluator`. The features are computed once;
    the floor is the mean floor at the full ``n`` (a fixed yardstick, common to every sampler
    scored at that ``n``).
    """
    from ddpm_helpers.measuring import metrics

    features = evaluator.classifier.features(metrics.quantize(images))
    floors, _ = evaluator.references(len(features))

    def fd(rows):
        return metrics.frechet_distance(*metrics.feature_statistics(rows),
                                        *evaluator.held_out_stats)

    interval = jackknife_interval(fd, features, groups=groups, level=level)
    return interval.scaled(1.0 / float(np.mean(floors)))


def confident_interval(classifier, images, level: float = DEFAULT_LEVEL) -> Interval:
    """Share of ``images`` classified with probability above the metric's threshold, with
    Wilson's interval (chapter "Evaluation")."""
    from ddpm_helpers.measuring import metrics

    confident = classifier.probabilities(images).max(1) > metrics.CONFIDENCE_THRESHOLD
    return proportion_interval(int(confident.sum()), len(confident), level)
