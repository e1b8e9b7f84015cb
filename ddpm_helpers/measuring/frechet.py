"""The Frechet distance between two Gaussians fitted to features (chapter "Evaluation", ``sec-evaluation``).

The distance behind FID (Heusel et al. 2017), Eq. (10.1) (``eq-frechet``);
:mod:`ddpm_helpers.measuring.metrics` applies it to the features of the book's digit classifier.
"""

from __future__ import annotations

import warnings

import numpy as np

# Relative size of the imaginary part of sqrtm(sigma1 sigma2) that is still round-off.
IMAGINARY_TOLERANCE = 1e-3



def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean vector and covariance matrix (float64, unbiased) of features (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N, D) with N >= 2, got {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`` (chapter "Evaluation",
    Eq. (10.1) (``eq-frechet``)), with ``scipy.linalg.sqrtm`` for the matrix square root. When the
    product is singular (fewer samples than features), ``eps`` is added to both diagonals, as FID
    code does. An imaginary part of the root larger than round-off raises ``ValueError``.
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"Shapes do not match: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}.")
    diff = mu1 - mu2
    with warnings.catch_warnings():  # singular products (dead ReLU features) are handled here
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.all(np.isfinite(covmean)):
            offset = np.eye(len(mu1)) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # sqrtm of a product of two covariances is real up to round-off; a large imaginary part
        # means the matrices are not covariances (or are badly conditioned): say so, do not drop it.
        largest = np.max(np.abs(covmean.imag))
        if largest > IMAGINARY_TOLERANCE * max(1.0, np.max(np.abs(covmean.real))):
            raise ValueError(
                f"The matrix square root in the Frechet distance has an imaginary part of {largest:.3g}: "
                "sigma1 and sigma2 must be covariance matrices (symmetric, positive semi-definite); "
                "with fewer samples than features they are singular, so use more samples."
            )
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # tiny negative values are round-off


def frechet_distance_of_features(features_a, features_b) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N, D) and (M, D)."""
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))
