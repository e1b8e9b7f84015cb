"""Tests of ddpm_helpers.method.gaussians against independent float64 computations.

References: scipy.stats densities, KL by numerical integration (scipy.integrate.quad), Monte
Carlo with a fixed seed, and the conjugate model's evidence and posterior obtained by brute-force
integration over z. Property tests (hypothesis) cover KL >= 0 and KL == 0 iff P == Q.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from ddpm_helpers.method.gaussians import (
    conjugate_elbo,
    conjugate_log_evidence,
    conjugate_posterior,
    kl_normal,
    normal_log_pdf,
)

PAIRS = [  # (mean_p, var_p, mean_q, var_q)
    (0.0, 1.0, 0.0, 1.0),
    (0.0, 1.0, 1.0, 1.0),
    (0.3, 0.5, -1.2, 2.0),
    (2.0, 4.0, 0.0, 0.25),
    (-1.0, 1e-2, -0.9, 3e-2),
]


def kl_by_quadrature(mean_p, var_p, mean_q, var_q):
    """KL(P || Q) = int p log(p / q) dz, with scipy.stats densities, over mean_p +- 12 sd_p."""
    p, q = stats.norm(mean_p, math.sqrt(var_p)), stats.norm(mean_q, math.sqrt(var_q))
    sd = math.sqrt(var_p)

    def integrand(z):
        return p.pdf(z) * (p.logpdf(z) - q.logpdf(z))

    value, _ = integrate.quad(integrand, mean_p - 12 * sd, mean_p + 12 * sd, epsabs=1e-12, epsrel=1e-12, limit=200)
    return value


# ------------------------------------------------------------------------- normal_log_pdf


def test_normal_log_pdf_matches_scipy():
    rng = np.random.default_rng(0)
    x, mean = rng.normal(size=50) * 3, rng.normal(size=50)
    variance = rng.uniform(0.01, 5.0, size=50)
    expected = stats.norm.logpdf(x, loc=mean, scale=np.sqrt(variance))
    np.testing.assert_allclose(normal_log_pdf(x, mean, variance), expected, rtol=1e-12, atol=1e-12)


def test_normal_log_pdf_integrates_to_one():
    total, _ = integrate.quad(lambda x: math.exp(normal_log_pdf(x, 0.7, 2.5)), -np.inf, np.inf)
    assert abs(total - 1.0) < 1e-9


def test_normal_log_pdf_broadcasts():
    out = normal_log_pdf(np.zeros((3, 1)), np.zeros(4), 1.0)
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, -0.5 * math.log(2 * math.pi))


# ------------------------------------------------------------------------------ kl_normal


@pytest.mark.parametrize("pair", PAIRS)
def test_kl_normal_matches_numerical_integration(pair):
    assert kl_normal(*pair) == pytest.approx(kl_by_quadrature(*pair), abs=1e-9)


def test_kl_normal_matches_monte_carlo():
    mean_p, var_p, mean_q, var_q = 0.3, 0.5, -1.2, 2.0
    rng = np.random.default_rng(1)
    z = rng.normal(mean_p, math.sqrt(var_p), size=200_000)
    log_ratio = stats.norm.logpdf(z, mean_p, math.sqrt(var_p)) - stats.norm.logpdf(z, mean_q, math.sqrt(var_q))
    standard_error = log_ratio.std() / math.sqrt(z.size)
    assert abs(kl_normal(mean_p, var_p, mean_q, var_q) - log_ratio.mean()) < 5 * standard_error


def test_kl_normal_is_not_symmetric():
    forward, backward = kl_normal(0.0, 1.0, 0.0, 4.0), kl_normal(0.0, 4.0, 0.0, 1.0)
    assert forward == pytest.approx(0.5 * (math.log(4) + 1 / 4 - 1), rel=1e-12)
    assert backward == pytest.approx(0.5 * (math.log(1 / 4) + 4 - 1), rel=1e-12)
    assert abs(forward - backward) > 0.4


def test_kl_normal_elementwise_matches_loop():
    pairs = np.array(PAIRS)
    vector = kl_normal(pairs[:, 0], pairs[:, 1], pairs[:, 2], pairs[:, 3])
    assert vector.shape == (len(PAIRS),)
    for value, pair in zip(vector, PAIRS):
        assert value == pytest.approx(kl_by_quadrature(*pair), abs=1e-9)


means = st.floats(-10, 10, allow_nan=False)
variances = st.floats(1e-3, 1e3, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(means, variances, means, variances)
def test_kl_normal_non_negative(mean_p, var_p, mean_q, var_q):
    assert kl_normal(mean_p, var_p, mean_q, var_q) >= -1e-12


@settings(max_examples=200, deadline=None)
@given(means, variances)
def test_kl_normal_zero_for_equal_distributions(mean, var):
    assert abs(kl_normal(mean, var, mean, var)) < 1e-12


@settings(max_examples=200, deadline=None)
@given(means, variances, st.floats(1e-3, 5), st.sampled_from(["mean", "var"]))
def test_kl_normal_positive_for_different_distributions(mean, var, change, which):
    # A different mean (by at least 1e-3 standard deviations) or a different variance (by a
    # factor of at least e^(1e-3)) gives a strictly positive KL.
    if which == "mean":
        other_mean, other_var = mean + change * math.sqrt(var), var
    else:
        other_mean, other_var = mean, var * math.exp(change)
    assert kl_normal(mean, var, other_mean, other_var) > 0
    assert kl_normal(other_mean, other_var, mean, var) > 0


# ---------------------------------------------------------------------- TensorFlow inputs


def test_tensorflow_float32_matches_numpy_and_keeps_dtype():
    pairs = np.array(PAIRS)
    tensors = [tf.constant(pairs[:, i], tf.float32) for i in range(4)]
    out = kl_normal(*tensors)
    assert isinstance(out, tf.Tensor) and out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), kl_normal(*pairs.T), rtol=1e-5, atol=1e-6)
    log_pdf = normal_log_pdf(tensors[0], 0.5, tensors[1])  # mixed with a Python float
    assert log_pdf.dtype == tf.float32
    np.testing.assert_allclose(log_pdf.numpy(), normal_log_pdf(pairs[:, 0], 0.5, pairs[:, 1]), rtol=1e-5)


def test_tensorflow_graph_and_gradients():
    @tf.function
    def loss(mean, log_var):
        return tf.reduce_sum(kl_normal(mean, tf.exp(log_var), 0.0, 1.0))

    mean = tf.Variable([0.5, -1.0])
    log_var = tf.Variable([0.3, -0.2])
    with tf.GradientTape() as tape:
        value = loss(mean, log_var)
    d_mean, d_log_var = tape.gradient(value, [mean, log_var])
    # KL(N(m, v) || N(0, 1)) = (v + m^2 - 1 - log v) / 2: d/dm = m, d/dlog v = (v - 1) / 2.
    np.testing.assert_allclose(d_mean.numpy(), mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(d_log_var.numpy(), (np.exp(log_var.numpy()) - 1) / 2, rtol=1e-5)
    expected = np.sum((np.exp(log_var.numpy()) + mean.numpy() ** 2 - 1 - log_var.numpy()) / 2)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_tensorflow_integer_tensor_rejected():
    with pytest.raises(ValueError, match="floating point"):
        kl_normal(tf.constant([1]), 1.0, 0.0, 1.0)


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("call, name", [
    (lambda: normal_log_pdf(0.0, 0.0, 0.0), "variance"),
    (lambda: normal_log_pdf(0.0, 0.0, np.array([1.0, -2.0])), "variance"),
    (lambda: kl_normal(0.0, -1.0, 0.0, 1.0), "var_p"),
    (lambda: kl_normal(0.0, 1.0, 0.0, np.nan), "var_q"),
    (lambda: conjugate_log_evidence(1.0, 0.0), "noise_var"),
    (lambda: conjugate_posterior(1.0, -0.5), "noise_var"),
    (lambda: conjugate_elbo(1.0, 0.5, 0.0, 0.0), "q_var"),
])
def test_non_positive_variance_raises(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be a positive variance.*Pass sigma\*\*2"):
        call()


# ------------------------------------------------------------------------ conjugate model
# z ~ N(0, 1), x | z ~ N(z, s2). References by integrating over z on a fine grid.

CASES = [(1.3, 0.5), (-0.4, 2.0), (3.0, 0.1)]


def joint_on_grid(x, s2):
    z = np.linspace(-15, 15, 300_001)
    joint = stats.norm.pdf(z, 0, 1) * stats.norm.pdf(x, z, math.sqrt(s2))
    return z, joint


@pytest.mark.parametrize("x, s2", CASES)
def test_conjugate_evidence_and_posterior_by_integration(x, s2):
    z, joint = joint_on_grid(x, s2)
    evidence = integrate.trapezoid(joint, z)
    posterior = joint / evidence
    mean = integrate.trapezoid(z * posterior, z)
    var = integrate.trapezoid((z - mean) ** 2 * posterior, z)
    assert conjugate_log_evidence(x, s2) == pytest.approx(math.log(evidence), abs=1e-9)
    post_mean, post_var = conjugate_posterior(x, s2)
    assert post_mean == pytest.approx(mean, abs=1e-9)
    assert post_var == pytest.approx(var, abs=1e-9)


@pytest.mark.parametrize("x, s2", CASES)
@pytest.mark.parametrize("q_mean, q_var", [(0.0, 1.0), (1.0, 0.2), (-2.0, 3.0)])
def test_conjugate_elbo_matches_monte_carlo(x, s2, q_mean, q_var):
    rng = np.random.default_rng(2)
    z = rng.normal(q_mean, math.sqrt(q_var), size=200_000)
    terms = (stats.norm.logpdf(x, z, math.sqrt(s2)) + stats.norm.logpdf(z, 0, 1)
             - stats.norm.logpdf(z, q_mean, math.sqrt(q_var)))
    standard_error = terms.std() / math.sqrt(z.size)
    assert abs(conjugate_elbo(x, s2, q_mean, q_var) - terms.mean()) < 5 * standard_error


@pytest.mark.parametrize("x, s2", CASES)
def test_evidence_minus_elbo_is_kl_to_posterior(x, s2):
    post_mean, post_var = conjugate_posterior(x, s2)
    q_means = np.array([post_mean, 0.0, 1.0, -2.0])
    q_vars = np.array([post_var, 1.0, 0.2, 3.0])
    gap = conjugate_log_evidence(x, s2) - conjugate_elbo(x, s2, q_means, q_vars)
    # KL(q || posterior) by quadrature, independent of kl_normal.
    expected = [kl_by_quadrature(m, v, post_mean, post_var) for m, v in zip(q_means, q_vars)]
    np.testing.assert_allclose(gap, expected, atol=1e-9)
    assert abs(gap[0]) < 1e-12  # q = posterior: the bound is tight
    assert np.all(gap[1:] > 1e-3)  # any other q: strictly below the evidence


def test_conjugate_functions_accept_tensorflow():
    x = tf.constant([1.3, -0.4], tf.float32)
    elbo = conjugate_elbo(x, 0.5, tf.constant(0.2), 0.7)
    assert elbo.dtype == tf.float32
    np.testing.assert_allclose(elbo.numpy(), conjugate_elbo(np.array([1.3, -0.4]), 0.5, 0.2, 0.7), rtol=1e-5)
    mean, var = conjugate_posterior(x, 0.5)
    np.testing.assert_allclose(mean.numpy(), [1.3 / 1.5, -0.4 / 1.5], rtol=1e-6)
    assert float(var) == pytest.approx(1 / 3, rel=1e-6)
