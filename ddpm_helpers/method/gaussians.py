"""Gaussian formulas used across the book: log-density, KL divergence, a conjugate model.

Defined in the chapter "Background: the probability behind diffusion" (``book/01_background.md``);
the chapter "Forward and reverse process" uses :func:`kl_normal` for the per-step KL terms of the
ELBO.

Every function works elementwise (with NumPy broadcasting) on

- NumPy arrays and Python numbers: computed in float64, and variances are checked (a variance
  that is not positive raises ``ValueError``);
- TensorFlow tensors or variables: computed with TensorFlow ops in the dtype of the first tensor
  argument (e.g. float32), so they run inside ``tf.function`` graphs and pass gradients. Values
  are not checked there (a graph cannot raise ``ValueError`` on data); a non-positive variance
  gives NaN or inf.

Variances, not standard deviations, are passed everywhere, as in the diffusion papers
(``beta_t`` is a variance).
"""

from __future__ import annotations

import math
import sys

import numpy as np

__all__ = [
    "normal_log_pdf",
    "kl_normal",
    "conjugate_log_evidence",
    "conjugate_posterior",
    "conjugate_elbo",
]

_LOG_2PI = math.log(2.0 * math.pi)


def _tensorflow_if_any(values):
    """TensorFlow, if any value is a TF tensor or variable (TF is only imported by the caller)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None and any(isinstance(v, (tf.Tensor, tf.Variable)) for v in values):
        return tf
    return None


def _prepare(values, variance_names):
    """Convert ``values`` (a dict name -> value) for one backend; check variances for NumPy.

    Returns ``(ops, converted values in the same order)`` where ``ops`` is ``tf.math`` or ``np``.
    """
    tf = _tensorflow_if_any(values.values())
    if tf is not None:
        dtype = next(v.dtype for v in values.values() if isinstance(v, (tf.Tensor, tf.Variable)))
        if not dtype.is_floating:
            raise ValueError(f"TensorFlow inputs must be floating point, got {dtype.name}: "
                             f"cast them first, e.g. tf.cast(x, tf.float32).")
        return tf.math, [tf.cast(v, dtype) for v in values.values()]
    converted = []
    for name, value in values.items():
        array = np.asarray(value, dtype=np.float64)
        if name in variance_names and not np.all(array > 0):
            bad = array[~(array > 0)].ravel()[0]
            raise ValueError(
                f"{name} must be a positive variance everywhere, got {float(bad):g}. Pass sigma**2 "
                f"(not sigma, a log-variance or 0); a point mass has no density.")
        converted.append(array)
    return np, converted


def normal_log_pdf(x, mean, variance):
    """Log-density of the univariate normal N(mean, variance) at ``x``, elementwise.

    log N(x; mean, variance) = -1/2 [log(2 pi variance) + (x - mean)^2 / variance].
    Chapter "Background", Eq. (1.14) (``eq-normal-pdf``). For an isotropic Gaussian in d dimensions,
    sum the result over the d coordinates.
    """
    ops, (x, mean, variance) = _prepare(
        {"x": x, "mean": mean, "variance": variance}, {"variance"}
    )
    return -0.5 * (_LOG_2PI + ops.log(variance) + (x - mean) ** 2 / variance)


def kl_normal(mean_p, var_p, mean_q, var_q):
    """KL(P || Q) in nats between P = N(mean_p, var_p) and Q = N(mean_q, var_q), elementwise.

    KL = 1/2 [log(var_q / var_p) + (var_p + (mean_p - mean_q)^2) / var_q - 1].
    Chapter "Background", Eq. (1.15) (``eq-kl-normal``). Not symmetric: ``kl_normal(a, b, c, d)``
    differs from ``kl_normal(c, d, a, b)`` in general. For isotropic Gaussians in d dimensions, sum
    over the coordinates (chapter "Forward and reverse process", per-step KL of the ELBO).
    """
    ops, (mean_p, var_p, mean_q, var_q) = _prepare(
        {"mean_p": mean_p, "var_p": var_p, "mean_q": mean_q, "var_q": var_q},
        {"var_p", "var_q"},
    )
    log_ratio = ops.log(var_q) - ops.log(var_p)
    return 0.5 * (log_ratio + (var_p + (mean_p - mean_q) ** 2) / var_q - 1.0)


# The conjugate model of the chapter "Background", section on the ELBO:
#     z ~ N(0, 1),    x | z ~ N(z, noise_var).
# Its evidence and posterior are known exactly, so the ELBO identities can be checked exactly.


def conjugate_log_evidence(x, noise_var):
    """log p(x) = log N(x; 0, 1 + noise_var) for the model z ~ N(0, 1), x | z ~ N(z, noise_var).

    Chapter "Background", Eq. (1.20) (``eq-conjugate-evidence``).
    """
    _, (x, noise_var) = _prepare(
        {"x": x, "noise_var": noise_var}, {"noise_var"}
    )
    return normal_log_pdf(x, 0.0, 1.0 + noise_var)


def conjugate_posterior(x, noise_var):
    """Mean and variance of p(z | x) = N(x / (1 + noise_var), noise_var / (1 + noise_var)).

    For the model z ~ N(0, 1), x | z ~ N(z, noise_var). Chapter "Background",
    Eq. (1.21) (``eq-conjugate-posterior``). Returns ``(mean, variance)``; the variance does not
    depend on ``x`` and has the shape of ``noise_var``.
    """
    _, (x, noise_var) = _prepare(
        {"x": x, "noise_var": noise_var}, {"noise_var"}
    )
    return x / (1.0 + noise_var), noise_var / (1.0 + noise_var)


def conjugate_elbo(x, noise_var, q_mean, q_var):
    """ELBO of q(z) = N(q_mean, q_var) for the model z ~ N(0, 1), x | z ~ N(z, noise_var).

    The three Gaussian expectations E_q[log p(x|z)] + E_q[log p(z)] - E_q[log q(z)], each in
    closed form (Chapter "Background", Eq. (1.22) (``eq-conjugate-elbo``)); it does not use the
    evidence or the KL, so the chapter can check evidence - ELBO = KL(q || p(z|x)) with it.
    """
    ops, (x, noise_var, q_mean, q_var) = _prepare(
        {"x": x, "noise_var": noise_var, "q_mean": q_mean, "q_var": q_var},
        {"noise_var", "q_var"},
    )
    squared_error = (x - q_mean) ** 2 + q_var  # E_q[(x - z)^2]
    expected_log_likelihood = -0.5 * (
        _LOG_2PI + ops.log(noise_var) + squared_error / noise_var
    )
    expected_log_prior = -0.5 * (_LOG_2PI + q_mean**2 + q_var)
    entropy = 0.5 * (_LOG_2PI + 1.0 + ops.log(q_var))
    return expected_log_likelihood + expected_log_prior + entropy
