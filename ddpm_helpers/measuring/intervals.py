"""Intervals for the book's quality numbers (chapters "Evaluation" and "Your turn").

A quality number measured on ``n`` samples would come out differently on another ``n`` samples
of the same sampler. Every number gets an interval that shows how far it moves by chance alone.
Two numbers are compared through the interval of their *difference* (:func:`verdict` calls a
difference when that interval excludes 0: a two-sided test at level 1 - ``level``, 5% by
default). Whether two intervals overlap is no such test: for two equal standard errors, 95%
intervals that do not overlap are a test at about 0.6%. Samples of two samplers that start from
the same noise are pairs, and the pairing is kept (:func:`paired_difference`,
:func:`paired_mean_difference`); numbers measured on independent samples are compared with
:func:`independent_difference`. Four ways to get an interval, each where it fits:

- :func:`proportion_interval`: Wilson's score interval for a share (the confident share, the
  agreement with a requested digit): exact enough at every ``n`` and never outside [0, 1];
- :func:`jackknife_interval`: the delete-a-group jackknife, for statistics such as the Frechet
  distance, whose value depends on ``n`` (chapter "Evaluation", Eq. (10.2) (``eq-jackknife``));
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
        """E.g. ``"1.25 [1.05, 1.45]"`` (square brackets, so that the interval reads clearly inside
        a parenthesis of the prose); ``fmt`` applies to all three numbers."""
        return f"{format(self.value, fmt)} [{format(self.low, fmt)}, {format(self.high, fmt)}]"

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

        se^2 = (G - 1) / G * sum_g (theta_g - mean(theta))^2      (Eq. (10.2) (``eq-jackknife``))

    The interval is ``value +- t se`` around the value on all the data (not bias-corrected, so
    that it stays comparable with references measured at the same ``n``), with ``t`` the quantile
    of Student's t with ``groups - 1`` degrees of freedom (2.13 for 16 groups at 95%): the
    standard error comes from only ``groups`` values.
    """
    from scipy.stats import t as student

    data = np.asarray(data)
    value = float(statistic(data))
    thetas = jackknife_replicates(statistic, data, groups=groups, seed=seed)
    se = math.sqrt((groups - 1) / groups * np.sum((thetas - thetas.mean()) ** 2))
    _normal_quantile(level)  # checks the level
    t = float(student.ppf(0.5 + level / 2, groups - 1))
    return Interval(value, value - t * se, value + t * se, level, f"jackknife ({groups} groups)")


def jackknife_replicates(statistic, data, *, groups: int = 16, seed: int = 0) -> np.ndarray:
    """The ``groups`` values ``theta_g`` of :func:`jackknife_interval`: ``statistic`` of ``data``
    with group ``g`` left out. The groups depend only on ``len(data)``, ``groups`` and ``seed``,
    so two data sets of the same length lose the same rows: that is what pairs them."""
    data = np.asarray(data)
    n = len(data)
    if not 2 <= groups <= n:
        raise ValueError(f"groups must lie between 2 and the number of rows ({n}), got {groups}.")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, groups)
    return np.array([float(statistic(data[np.setdiff1d(order, part)])) for part in parts])


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


def paired_difference(statistic, a, b, *, groups: int = 16, level: float = DEFAULT_LEVEL,
                      seed: int = 0) -> Interval:
    """``statistic(a) - statistic(b)`` for paired rows (row ``i`` of ``a`` and of ``b`` share their
    starting noise, label or reference data), with a delete-a-group jackknife interval
    (Eq. (10.2) (``eq-jackknife``)) that leaves the same rows out of both: what the two have in
    common cancels in the difference.
    """
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b):
        raise ValueError(f"Paired data need as many rows in both, got {len(a)} and {len(b)}.")
    pairs = np.arange(len(a))
    interval = jackknife_interval(lambda rows: float(statistic(a[rows])) - float(statistic(b[rows])), pairs,
                                  groups=groups, level=level, seed=seed)
    return dataclasses.replace(interval, method=f"paired {interval.method}")


def paired_mean_difference(a_values, b_values, level: float = DEFAULT_LEVEL) -> Interval:
    """Mean of ``a - b`` over paired repeated measurements (e.g. sets of samples drawn with the
    same seeds and scored against the same reference sets), with Student's t interval."""
    a, b = np.asarray(a_values, np.float64), np.asarray(b_values, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Paired measurements need the same number of each, got {a.shape} and {b.shape}.")
    interval = mean_interval(a - b, level)
    return dataclasses.replace(interval, method=f"paired {interval.method}")


def paired_ratio(a_values, b_values, level: float = DEFAULT_LEVEL) -> Interval:
    """``mean(a) / mean(b)`` over paired repeated measurements (e.g. a distance and its floor from
    the same fresh draw), with a Student's t interval from the delta method: the standard error of
    the ratio is that of the mean of ``a - ratio * b``, divided by ``mean(b)``."""
    from scipy.stats import t as student

    a, b = np.asarray(a_values, np.float64), np.asarray(b_values, np.float64)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"Need at least 2 paired measurements of each, got {a.shape} and {b.shape}.")
    ratio = float(a.mean() / b.mean())
    se = float((a - ratio * b).std(ddof=1) / math.sqrt(len(a)) / abs(b.mean()))
    half = float(student.ppf(0.5 + level / 2, len(a) - 1) * se)
    return Interval(ratio, ratio - half, ratio + half, level, f"delta-method t interval over {len(a)} pairs")


def independent_difference(a: Interval, b: Interval) -> Interval:
    """``a - b`` for two numbers measured on independent samples (e.g. generated and real
    images), from their symmetric normal-theory intervals: the standard errors add in squares."""
    if a.level != b.level:
        raise ValueError(f"Both intervals need the same level, got {a.level} and {b.level}.")
    z = _normal_quantile(a.level)
    se = math.hypot((a.high - a.low) / (2 * z), (b.high - b.low) / (2 * z))
    d = a.value - b.value
    return Interval(d, d - z * se, d + z * se, a.level, "difference of independent estimates")


def verdict(difference: Interval, *, lower: str = "clearly lower", higher: str = "clearly higher",
            same: str = "not resolved at this sample size") -> str:
    """The words for ``a`` compared with ``b``, given the interval of ``a - b``: ``lower`` or
    ``higher`` only when it excludes 0 (a two-sided test at level 1 - ``difference.level``), else
    ``same``, which should say what the samples could not resolve rather than that the two are
    equal. The book glues the returned words into its prose."""
    if difference.contains(0.0):
        return same
    return lower if difference.value < 0 else higher


def fd_ratio_difference(evaluator, images_a, images_b, *, groups: int = 16,
                        level: float = DEFAULT_LEVEL) -> Interval:
    """FD / floor of ``images_a`` minus that of ``images_b``, paired image by image (samples drawn
    from the same starting noise), with the paired jackknife of :func:`paired_difference`."""
    fd, floor = _fd_of_features(evaluator, len(images_a))
    features = [_features(evaluator, images) for images in (images_a, images_b)]
    return paired_difference(fd, *features, groups=groups, level=level).scaled(1.0 / floor)


def fd_ratio_interval(evaluator, images, *, groups: int = 16,
                      level: float = DEFAULT_LEVEL) -> Interval:
    """FD / floor of ``images`` with a jackknife interval over the images (chapter "Evaluation").

    ``evaluator`` is a :class:`ddpm_helpers.measuring.metrics.Evaluator`. The features are computed once;
    the floor is the mean floor at the full ``n`` (a fixed yardstick, common to every sampler
    scored at that ``n``).
    """
    fd, floor = _fd_of_features(evaluator, len(images))
    return jackknife_interval(fd, _features(evaluator, images), groups=groups,
                              level=level).scaled(1.0 / floor)


def fd_ratio_replicates(evaluator, images, *, groups: int = 16, seed: int = 0) -> np.ndarray:
    """FD / floor of ``images`` with each jackknife group left out (:func:`jackknife_replicates`):
    the values behind :func:`fd_ratio_interval`. For two paired sets, the replicates of
    :func:`fd_ratio_difference` are the differences of theirs, so the squared standard error of
    the difference is ``se_a^2 + se_b^2 - 2 cov_ab`` (chapter "Evaluation")."""
    fd, floor = _fd_of_features(evaluator, len(images))
    return jackknife_replicates(fd, _features(evaluator, images), groups=groups, seed=seed) / floor


def kid_interval(evaluator, images, *, groups: int = 16, level: float = DEFAULT_LEVEL,
                 seed: int = 0) -> Interval:
    """KID of ``images`` to the real held-out digits, with a jackknife interval over ``images``.

    KID (Binkowski et al., 2018) is the squared maximum mean discrepancy between the two sets of
    classifier features with the kernel ``(x . y / d + 1)^3``, estimated without bias
    (:func:`ddpm_helpers.measuring.inception.mmd2_unbiased`): a set drawn from the same
    distribution as the held-out digits scores 0 on average at any size, where FD has a floor
    that depends on ``n``. The features are first standardised by the held-out digits' mean and
    standard deviation per feature: the cubic kernel was made for Inception's features, and on
    the classifier's raw ones its values swing by thousands. Groups as in
    :func:`jackknife_interval`, so two sets of the same size lose the same rows.
    """
    reference = np.asarray(evaluator.held_out_features, np.float64)
    mean, std = reference.mean(0), reference.std(0) + 1e-6
    features = (np.asarray(_features(evaluator, images), np.float64) - mean) / std
    return kid_interval_of_features(features, (reference - mean) / std, groups=groups, level=level,
                                    seed=seed)


def kid_interval_of_features(features, reference, *, groups: int = 16, level: float = DEFAULT_LEVEL,
                             seed: int = 0) -> Interval:
    """:func:`kid_interval` for feature arrays: ``features`` (n, d) against ``reference`` (m, d)."""
    from ddpm_helpers.measuring.inception import mmd2_unbiased

    reference = np.asarray(reference, np.float64)
    return jackknife_interval(lambda rows: mmd2_unbiased(rows, reference), np.asarray(features, np.float64),
                              groups=groups, level=level, seed=seed)


def _features(evaluator, images):
    from ddpm_helpers.measuring import metrics

    return evaluator.classifier.features(metrics.quantize(images))


def _fd_of_features(evaluator, n: int):
    """``(fd, floor)``: the FD of a set of features to the held-out digits, and the mean floor at
    ``n`` images that FD / floor divides by."""
    from ddpm_helpers.measuring import metrics

    floors, _ = evaluator.references(n)

    def fd(rows):
        return metrics.frechet_distance(*metrics.feature_statistics(rows), *evaluator.held_out_stats)

    return fd, float(np.mean(floors))


def confident_interval(classifier, images, level: float = DEFAULT_LEVEL) -> Interval:
    """Share of ``images`` classified with probability above the metric's threshold, with
    Wilson's interval (chapter "Evaluation")."""
    from ddpm_helpers.measuring import metrics

    confident = classifier.probabilities(images).max(1) > metrics.CONFIDENCE_THRESHOLD
    return proportion_interval(int(confident.sum()), len(confident), level)
