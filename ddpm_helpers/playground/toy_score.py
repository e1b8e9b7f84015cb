"""The exact score of the 2-D data sets, to check what a trained denoiser has learned.

Chapter "Diffusion in two dimensions" (``sec-diffusion-2d``, Eq. (6.2) (``eq-mixture-score``)).

Every data set of :func:`ddpm_helpers.playground.toy_data.make_toy_data` is a Gaussian mixture: the
eight Gaussians exactly, the two moons and the swiss roll as a continuous mixture over a curve (a
point on the curve, plus Gaussian noise). :func:`toy_mixture` writes each as a finite mixture (the
curve sampled by the midpoint rule, far more finely than the noise's width). The forward process
keeps a mixture a mixture: ``q_t`` has the means ``sqrt(alpha_bar) mu_k`` and the variances
``alpha_bar * var + (1 - alpha_bar)``, so its density, its score and the best possible noise
prediction ``E[eps | x_t] = -sqrt(1 - alpha_bar) grad log q_t(x_t)`` are closed-form
(:func:`mixture_log_density`, :func:`mixture_score`, :func:`best_noise`), all computed by
:func:`ddpm_helpers.method.diffusion.gaussian_mixture_posterior`, which chapter "Forward and reverse
process" uses for its mixtures too.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ddpm_helpers.playground import toy2d


@dataclasses.dataclass(frozen=True)
class ToyMixture:
    """A Gaussian mixture in 2-D: K means (K, 2), one diagonal variance (2,), weights (K,)."""

    name: str
    means: np.ndarray
    variances: np.ndarray
    weights: np.ndarray


def toy_mixture(name: str, resolution: int = 512) -> ToyMixture:
    """The data set ``name`` of :func:`~ddpm_helpers.playground.toy_data.make_toy_data` as a
    Gaussian mixture.

    ``resolution``: components per moon (``"two_moons"``) or along the spiral (``"swiss_roll"``,
    four times as many, for its longer curve), placed at the midpoints of equal steps of the
    curve's parameter. At 512 the components of the moons are about 0.01 apart, a fifth of the
    noise's standard deviation, so the sum equals the integral to far below float32 precision.
    """
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}.")
    if name == "two_moons":
        angle = np.pi * (np.arange(resolution) + 0.5) / resolution
        upper = np.stack([np.cos(angle), np.sin(angle)], axis=1)
        lower = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
        scale = toy2d._MOONS_SCALE
        means = (np.concatenate([upper, lower]) - toy2d._MOONS_CENTRE) / scale
        variances = (0.05 / scale) ** 2
    elif name == "swiss_roll":
        count = 4 * resolution
        angle = 1.5 * np.pi * (1.0 + 2.0 * (np.arange(count) + 0.5) / count)
        means = np.stack([angle * np.cos(angle), angle * np.sin(angle)], axis=1) / 7.0
        means = means - toy2d._ROLL_CENTRE
        variances = np.full(2, 0.05**2)
    elif name == "eight_gaussians":
        means, variances = toy2d.EIGHT_GAUSSIAN_CENTRES, np.full(2, 0.1**2)
    else:
        raise ValueError(f"Unknown toy data set {name!r}. Valid names: {', '.join(toy2d.TOY_DATASETS)}.")
    means = np.asarray(means, dtype=np.float64)
    weights = np.full(len(means), 1.0 / len(means))
    return ToyMixture(name, means, np.asarray(variances, dtype=np.float64), weights)


def _posterior(x, alpha_bar, mixture: ToyMixture) -> dict:
    """:func:`ddpm_helpers.method.diffusion.gaussian_mixture_posterior` of the noised ``mixture``."""
    from ddpm_helpers.method.diffusion import gaussian_mixture_posterior

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must be points of shape (n, 2), got {x.shape}.")
    stds = np.broadcast_to(np.sqrt(mixture.variances), mixture.means.shape)
    return gaussian_mixture_posterior(x, alpha_bar, mixture.means, stds, mixture.weights)


def mixture_log_density(x, alpha_bar, mixture: ToyMixture) -> np.ndarray:
    """log q_t(x) (n,) of the noised mixture at ``alpha_bar`` (a number or one per point)."""
    return _posterior(x, alpha_bar, mixture)["log_density"]


def mixture_score(x, alpha_bar, mixture: ToyMixture) -> np.ndarray:
    """grad log q_t(x) (n, 2) of the noised mixture, Eq. (6.2) (``eq-mixture-score``)."""
    return _posterior(x, alpha_bar, mixture)["score"]


def best_noise(x, alpha_bar, mixture: ToyMixture) -> np.ndarray:
    """E[eps | x_t = x] = -sqrt(1 - alpha_bar) grad log q_t(x): the best possible noise prediction."""
    return _posterior(x, alpha_bar, mixture)["eps_mean"]
