"""Two-dimensional data sets and their score (chapter "Diffusion in two dimensions", ``sec-diffusion-2d``).

- :func:`make_toy_data`: three data sets generated in code (no download), with class labels on
  request (:func:`nearest_gaussian` classifies the eight Gaussians);
- :func:`sliced_wasserstein` (Eq. (6.3) (``eq-sliced-wasserstein``)) and :func:`evaluate_toy`: the
  quality metric of the 2-D chapter and its data-vs-data floor.

:mod:`ddpm_helpers.playground.toy2d` re-exports all of them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

TOY_DATASETS = ("two_moons", "swiss_roll", "eight_gaussians")
TOY_NUM_CLASSES = {"two_moons": 2, "swiss_roll": 3, "eight_gaussians": 8}
EIGHT_GAUSSIAN_CENTRES = 1.4 * np.stack([np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1)

# Shift and scale that give the two moons mean ~0 and standard deviation ~1 in both coordinates.
_MOONS_CENTRE = np.array([0.5, 0.25])
_MOONS_SCALE = np.array([0.87, 0.5])
_ROLL_CENTRE = np.array([0.28, 0.02])


def make_toy_data(name: str, n: int, seed: int = 0, *, labels: bool = False):
    """``n`` independent points of a named 2-D data set, float32 (n, 2), roughly mean 0 and variance 1.

    - ``"two_moons"``: two interleaved half circles (each point picks a moon at random), noise 0.05;
      label = the moon (0 upper, 1 lower);
    - ``"swiss_roll"``: a 2-D spiral; label = which third of the spiral (0 inner ... 2 outer);
    - ``"eight_gaussians"``: a mixture of 8 small Gaussians on a circle; label = the Gaussian.

    Every point is drawn independently (also which moon or which Gaussian it belongs to), so two
    draws with different seeds differ the way a perfect generator's samples differ from the data:
    that is what makes the data-vs-data floor of :func:`evaluate_toy` fair. With ``labels=True``
    returns ``(points, labels)`` with int32 labels in ``range(TOY_NUM_CLASSES[name])``.
    Raises ``ValueError`` for an unknown name or a non-positive ``n``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of points, got {n!r}.")
    rng = np.random.default_rng(seed)
    if name == "two_moons":
        angle = math.pi * rng.random(n)
        classes = (rng.random(n) < 0.5).astype(np.int32)
        points = np.where(classes[:, None] == 0,
                          np.stack([np.cos(angle), np.sin(angle)], axis=1),
                          np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1))
        points = points + 0.05 * rng.standard_normal((n, 2))
        points = (points - _MOONS_CENTRE) / _MOONS_SCALE
    elif name == "swiss_roll":
        u = rng.random(n)
        angle = 1.5 * np.pi * (1.0 + 2.0 * u)
        classes = np.minimum((3 * u).astype(np.int32), 2)
        points = np.stack([angle * np.cos(angle), angle * np.sin(angle)], axis=1) / 7.0 - _ROLL_CENTRE
        points += 0.05 * rng.standard_normal((n, 2))
    elif name == "eight_gaussians":
        classes = rng.integers(0, 8, n).astype(np.int32)
        points = EIGHT_GAUSSIAN_CENTRES[classes] + 0.1 * rng.standard_normal((n, 2))
    else:
        raise ValueError(f"Unknown toy data set {name!r}. Valid names: {', '.join(TOY_DATASETS)}.")
    points = points.astype(np.float32)
    return (points, classes.astype(np.int32)) if labels else points


def nearest_gaussian(points) -> np.ndarray:
    """The index (int32, (n,)) of the nearest centre of ``"eight_gaussians"``: a perfect classifier for it."""
    from scipy.spatial.distance import cdist

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {points.shape}.")
    return cdist(points, EIGHT_GAUSSIAN_CENTRES, "sqeuclidean").argmin(axis=1).astype(np.int32)


# --------------------------------------------------------------------------------------------
# Quality: sliced Wasserstein distance and its floor
# --------------------------------------------------------------------------------------------

def projection_directions(dim: int, num_projections: int = 256, seed: int = 0) -> np.ndarray:
    """``num_projections`` random unit vectors in ``dim`` dimensions, as the columns of a (dim, P) array."""
    if num_projections < 1:
        raise ValueError(f"num_projections must be at least 1, got {num_projections}.")
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((dim, num_projections))
    return directions / np.linalg.norm(directions, axis=0, keepdims=True)


def _sorted_projections(points, directions) -> np.ndarray:
    """(P, n): the projections of the points on each direction, sorted (one row per direction)."""
    return np.sort(directions.T @ np.asarray(points, dtype=np.float64).T, axis=1)


def sliced_wasserstein(a, b, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two equally sized point clouds (n, d).

    ``SW_2(a, b)^2`` is the mean over random unit directions ``u`` of ``W_2^2`` between the 1-D
    projections ``a u`` and ``b u``; in one dimension optimal transport pairs the sorted points,
    so ``W_2^2`` there is the mean squared difference of the sorted projections. Chapter
    "Diffusion in two dimensions", Eq. (6.3) (``eq-sliced-wasserstein``). The directions
    (:func:`projection_directions`) depend only on ``seed``, so the same ``seed`` gives
    comparable numbers.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"Need two point clouds of the same shape (n, d); got {a.shape} and {b.shape}.")
    directions = projection_directions(a.shape[1], num_projections, seed)
    return float(np.sqrt(np.mean((_sorted_projections(a, directions) - _sorted_projections(b, directions)) ** 2)))


@dataclasses.dataclass
class ToyEvaluation:
    """Sliced Wasserstein distances of samples to fresh data, beside the data-vs-data floor.

    ``distance`` is the mean over ``repeats`` fresh data sets of the distance samples <-> data;
    ``floor`` the mean distance between two fresh data sets of the same size ``n`` (what a
    perfect generator would score) and ``floor_std`` its spread; ``ratio = distance / floor``.
    """

    name: str
    n: int
    distance: float
    floor: float
    floor_std: float
    ratio: float
    distances: list
    floors: list

    def summary(self) -> str:
        """One line: the distance, its data-vs-data floor (with the standard deviation of the
        floor's draws), their ratio and n."""
        return (f"{self.name}: sliced Wasserstein {self.distance:.4f} | floor (data vs data) "
                f"{self.floor:.4f} (sd {self.floor_std:.4f} over {len(self.floors)} draws) | "
                f"ratio {self.ratio:.2f} | n = {self.n}")


def evaluate_toy(samples, name: str, *, repeats: int = 5, seed: int = 10_000) -> ToyEvaluation:
    """Score ``samples`` (n, 2) of data set ``name`` against ``repeats`` fresh draws of the same size.

    Fresh data sets use seeds ``seed, seed + 1, ...`` (far from the seeds used for training), the
    floor compares pairs of them; every distance is :func:`sliced_wasserstein` with its default
    projections.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape (n, 2), got {samples.shape}.")
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"samples hold {int(np.sum(~np.isfinite(samples)))} NaN/inf values: training diverged.")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    n = len(samples)
    directions = projection_directions(2)  # those of sliced_wasserstein's default seed

    def distance(sorted_a, sorted_b):
        return float(np.sqrt(np.mean((sorted_a - sorted_b) ** 2)))

    projected = _sorted_projections(samples, directions)
    distances, floors = [], []
    for r in range(repeats):
        fresh = _sorted_projections(make_toy_data(name, n, seed=seed + 2 * r), directions)
        other = _sorted_projections(make_toy_data(name, n, seed=seed + 2 * r + 1), directions)
        distances.append(distance(projected, fresh))
        floors.append(distance(other, fresh))
    distance, floor = float(np.mean(distances)), float(np.mean(floors))
    return ToyEvaluation(name=name, n=n, distance=distance, floor=floor, floor_std=float(np.std(floors)),
                         ratio=distance / floor, distances=distances, floors=floors)
