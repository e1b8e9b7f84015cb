"""Tests of ddpm_helpers.method.diffusion against float64 NumPy references written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_helpers.method import diffusion
from ddpm_helpers.method.schedules import SCHEDULE_NAMES, make_schedule

T = 200


def ref_alpha_bars(betas):
    out, product = [], 1.0
    for beta in betas:
        product *= 1.0 - beta
        out.append(product)
    return np.array(out)


def broadcast(values, t, rank):
    return np.asarray(values)[np.asarray(t)].reshape((-1,) + (1,) * (rank - 1))


@pytest.fixture(params=["linear", "cosine"])
def schedule(request):
    return make_schedule(request.param, T)


@pytest.fixture(params=[(5, 8, 8, 1), (5, 3)], ids=["images", "vectors"])
def batch(request):
    rng = np.random.default_rng(1)
    shape = request.param
    x0 = rng.uniform(-1, 1, size=shape)
    noise = rng.standard_normal(shape)
    t = np.array([0, 1, 57, T - 2, T - 1], dtype=np.int32)
    return x0, noise, t


def ref_terms(schedule, t, rank):
    betas = schedule.betas
    ab = ref_alpha_bars(betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    g = lambda a: broadcast(a, t, rank)  # noqa: E731
    return g(betas), g(ab), g(ab_prev)


def test_q_sample_matches_reference(schedule, batch):
    x0, noise, t = batch
    _, ab, _ = ref_terms(schedule, t, x0.ndim)
    expected = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    got = diffusion.q_sample(schedule, x0, tf.constant(t), noise)
    assert got.dtype == tf.float32 and got.shape == x0.shape
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_q_step_matches_reference(schedule, batch):
    x_prev, noise, t = batch
    beta, _, _ = ref_terms(schedule, t, x_prev.ndim)
    expected = np.sqrt(1 - beta) * x_prev + np.sqrt(beta) * noise
    np.testing.assert_allclose(diffusion.q_step(schedule, x_prev, t, noise).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_noise_and_x0_conversions_match_reference(schedule, batch):
    x0, noise, t = batch
    _, ab, _ = ref_terms(schedule, t, x0.ndim)
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    x0_hat = diffusion.predict_x0_from_noise(schedule, x_t, t, noise).numpy()
    expected_x0 = (x_t - np.sqrt(1 - ab) * noise) / np.sqrt(ab)
    # At the last steps 1/sqrt(alpha_bar) is large: float32 rounding is amplified accordingly.
    scale = 1 / np.sqrt(ab)
    assert np.all(np.abs(x0_hat - expected_x0) <= 1e-5 * scale * (1 + np.abs(x_t) + np.abs(noise)))
    eps_hat = diffusion.predict_noise_from_x0(schedule, x_t, t, x0).numpy()
    expected_eps = (x_t - np.sqrt(ab) * x0) / np.sqrt(1 - ab)
    scale = 1 / np.sqrt(1 - ab)
    assert np.all(np.abs(eps_hat - expected_eps) <= 1e-5 * scale * (1 + np.abs(x_t) + np.abs(x0)))
    # Away from t = 0 (where 1 - alpha_bar is tiny) the round trip recovers the noise closely.
    np.testing.assert_allclose(eps_hat[2:], noise[2:], atol=1e-3)


def test_velocity_and_inverses_match_reference(schedule, batch):
    x0, noise, t = batch
    _, ab, _ = ref_terms(schedule, t, x0.ndim)
    x_t = np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise
    v_expected = np.sqrt(ab) * noise - np.sqrt(1 - ab) * x0
    v = diffusion.velocity(schedule, x0, t, noise)
    np.testing.assert_allclose(v.numpy(), v_expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diffusion.predict_x0_from_velocity(schedule, x_t, t, v_expected).numpy(), x0, atol=2e-6)
    np.testing.assert_allclose(diffusion.predict_noise_from_velocity(schedule, x_t, t, v_expected).numpy(), noise, atol=2e-6)


def test_q_posterior_matches_bayes_in_precision_form(schedule, batch):
    """Reference from Bayes' rule: precisions add, means are precision-weighted."""
    x0, x_t, t = batch
    beta, ab, ab_prev = ref_terms(schedule, t, x0.ndim)
    mean, var, log_var = diffusion.q_posterior(schedule, x0, x_t, t)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = (1 - beta) / beta + 1 / (1 - ab_prev)
        ref_var = np.where(ab_prev == 1.0, 0.0, 1 / precision)
        ref_mean = np.where(
            ab_prev == 1.0, x0, ref_var * (np.sqrt(1 - beta) * x_t / beta + np.sqrt(ab_prev) * x0 / (1 - ab_prev))
        )
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-5, atol=1e-6)
    assert var.shape == (len(t),) + (1,) * (x0.ndim - 1)
    np.testing.assert_allclose(var.numpy(), ref_var, rtol=1e-5, atol=1e-12)
    # log variance: log(beta_tilde), with t = 0 (variance 0) replaced by the value at t = 1.
    beta_tilde_1 = schedule.betas[1] * schedule.betas[0] / (1 - (1 - schedule.betas[0]) * (1 - schedule.betas[1]))
    ref_log = np.where(ab_prev == 1.0, math.log(beta_tilde_1), np.log(np.where(ref_var > 0, ref_var, 1.0)))
    np.testing.assert_allclose(log_var.numpy(), ref_log, rtol=1e-5)


def test_forward_chain_matches_closed_form():
    """Running q_step t times gives the mean and variance of q_sample (Eq. eq-q-xt-x0)."""
    schedule = make_schedule("linear", 30, beta_start=1e-3, beta_end=0.2)
    n = 20000
    x0 = np.linspace(-1, 1, 4)
    x = tf.constant(np.tile(x0, (n, 1)), tf.float32)
    g = tf.random.Generator.from_seed(0)
    for i in range(schedule.timesteps):
        x = diffusion.q_step(schedule, x, tf.fill([n], i), g.normal([n, 4]))
        if i in (0, 9, 29):
            ab = schedule.alpha_bars[i]
            mean, var = x.numpy().mean(0), x.numpy().var(0)
            np.testing.assert_allclose(mean, math.sqrt(ab) * x0, atol=5 * math.sqrt((1 - ab) / n))
            np.testing.assert_allclose(var, 1 - ab, atol=6 * (1 - ab) * math.sqrt(2 / n))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    name=st.sampled_from(SCHEDULE_NAMES),
    timesteps=st.integers(2, 1000),
    fraction=st.floats(0.0, 1.0, exclude_max=True),
    seed=st.integers(0, 2**16),
)
def test_q_sample_statistics_match_closed_form(name, timesteps, fraction, seed):
    schedule = make_schedule(name, timesteps)
    t = int(fraction * timesteps)
    n = 4000
    x0 = np.linspace(-1, 1, 8)
    noise = np.random.default_rng(seed).standard_normal((n, 8))
    x_t = diffusion.q_sample(schedule, np.tile(x0, (n, 1)), np.full(n, t, np.int32), noise).numpy()
    ab = schedule.alpha_bars[t]
    # Mean within 5 standard errors, variance within 6 (the sampling error of a variance is sigma^2 sqrt(2/n)).
    assert np.all(np.abs(x_t.mean(0) - math.sqrt(ab) * x0) <= 5 * math.sqrt((1 - ab) / n) + 1e-6)
    assert np.all(np.abs(x_t.var(0) - (1 - ab)) <= 6 * (1 - ab) * math.sqrt(2 / n) + 1e-6)


def test_all_functions_work_inside_tf_function_with_unknown_batch():
    schedule = make_schedule("cosine", 50)
    spec_x = tf.TensorSpec([None, 8, 8, 1], tf.float32)
    spec_t = tf.TensorSpec([None], tf.int32)

    @tf.function(input_signature=[spec_x, spec_x, spec_t])
    def everything(x0, noise, t):
        x_t = diffusion.q_sample(schedule, x0, t, noise)
        step = diffusion.q_step(schedule, x0, t, noise)
        x0_hat = diffusion.predict_x0_from_noise(schedule, x_t, t, noise)
        eps_hat = diffusion.predict_noise_from_x0(schedule, x_t, t, x0)
        v = diffusion.velocity(schedule, x0, t, noise)
        x0_v = diffusion.predict_x0_from_velocity(schedule, x_t, t, v)
        eps_v = diffusion.predict_noise_from_velocity(schedule, x_t, t, v)
        mean, var, log_var = diffusion.q_posterior(schedule, x0, x_t, t)
        loss = diffusion.diffusion_loss("huber")(noise, eps_hat)
        return x_t, step, x0_hat, eps_hat, v, x0_v, eps_v, mean, var, log_var, loss

    rng = np.random.default_rng(0)
    x0 = tf.constant(rng.uniform(-1, 1, (3, 8, 8, 1)), tf.float32)
    noise = tf.constant(rng.standard_normal((3, 8, 8, 1)), tf.float32)
    t = tf.constant([3, 20, 49])
    graph = everything(x0, noise, t)
    eager = everything.python_function(x0, noise, t)
    for g, e in zip(graph, eager):
        np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-6)
    assert graph[8].shape == (3, 1, 1, 1)


def test_eager_t_out_of_range_raises():
    schedule = make_schedule("linear", 10)
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\) = \[0, 10\)"):
        diffusion.q_sample(schedule, x, tf.constant([0, 10]), x)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\)"):
        diffusion.q_posterior(schedule, x, x, np.array([-1, 3]))


# ---------------------------------------------------------------- losses


def ref_huber(noise, predicted, delta=1.0):
    r = np.abs(noise - predicted)
    return np.mean(np.where(r <= delta, 0.5 * r**2, delta * (r - 0.5 * delta)))


def test_losses_match_reference():
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((4, 8, 8, 1))
    predicted = noise + rng.normal(0, 1.5, noise.shape)  # residuals on both sides of delta = 1
    assert np.mean(np.abs(noise - predicted) > 1) > 0.2
    huber = diffusion.diffusion_loss("huber")(noise, predicted)
    mse = diffusion.diffusion_loss("mse")(noise, predicted)
    assert huber.shape == () and mse.shape == ()
    np.testing.assert_allclose(float(huber), ref_huber(noise, predicted), rtol=1e-5)
    np.testing.assert_allclose(float(mse), np.mean((noise - predicted) ** 2), rtol=1e-5)
    # Small residuals: Huber (delta = 1) is exactly half the squared error.
    small = noise + 0.1 * rng.standard_normal(noise.shape)
    np.testing.assert_allclose(
        float(diffusion.diffusion_loss("huber")(noise, small)),
        0.5 * float(diffusion.diffusion_loss("mse")(noise, small)),
        rtol=1e-5,
    )


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown loss 'l1'\. Valid losses: huber, mse"):
        diffusion.diffusion_loss("l1")


def test_x0_from_noise_is_stable_at_the_cosine_schedules_last_step():
    """At alpha_bar = 2.4e-9 the form sqrt(1/ab) x - sqrt(1/ab - 1) eps loses up to 6e-3 in float32."""
    schedule = make_schedule("cosine", 1000)
    ab = schedule.alpha_bars[-1]
    assert ab < 3e-9
    rng = np.random.default_rng(0)
    n = 10_000
    x0, eps = rng.uniform(-1, 1, (n, 1)), rng.standard_normal((n, 1))
    x_t = (np.sqrt(ab) * x0 + np.sqrt(1 - ab) * eps).astype(np.float32)
    eps32 = eps.astype(np.float32)
    exact = (x_t.astype(np.float64) - np.sqrt(1 - ab) * eps32.astype(np.float64)) / np.sqrt(ab)  # same inputs
    got = diffusion.predict_x0_from_noise(schedule, x_t, tf.fill([n], 999), eps32).numpy()
    assert np.max(np.abs(got - exact)) < 2e-4
    unstable = np.float32(np.sqrt(1 / ab)) * x_t - np.float32(np.sqrt(1 / ab - 1)) * eps32
    assert np.max(np.abs(unstable - exact)) > 2e-3  # what the test guards against
    back = diffusion.predict_noise_from_x0(schedule, x_t, tf.fill([n], 999), got).numpy()
    np.testing.assert_allclose(back, eps32, atol=1e-5)


def test_discrete_best_noise_error_matches_monte_carlo_and_gaussian_limit():
    """The per-pixel best noise error for discrete data: against the error of the exact
    posterior mean (gaussian_mixture_posterior with zero-width components) on samples, and,
    for a fine grid of Gaussian-weighted levels, against alpha_bar (unit Gaussian data)."""
    rng = np.random.default_rng(0)
    levels = np.linspace(-1, 1, 5)
    probs = np.array([0.5, 0.1, 0.1, 0.1, 0.2])
    n = 200_000
    x0 = rng.choice(levels, size=n, p=probs)
    eps = rng.standard_normal(n)
    for ab in (0.05, 0.3, 0.9, 0.99):
        x_t = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps
        best = diffusion.gaussian_mixture_posterior(
            x_t[:, None], ab, levels[:, None], 0.0, probs)["eps_mean"][:, 0]
        sq = (eps - best) ** 2
        z = abs(sq.mean() - diffusion.discrete_best_noise_error(levels, probs, ab))
        assert z < 5 * sq.std() / math.sqrt(n) + 1e-9, ab
    grid = np.linspace(-6, 6, 241)
    gauss = np.exp(-0.5 * grid**2)
    for ab in (0.2, 0.8):
        got = diffusion.discrete_best_noise_error(
            grid, gauss / gauss.sum(), ab, nodes=201)
        assert abs(got - ab) < 1e-3, (ab, got)
    assert diffusion.discrete_best_noise_error(levels, probs, 1.0) == 0.0
    with pytest.raises(ValueError, match="sum to 1"):
        diffusion.discrete_best_noise_error(levels, probs[:4], 0.5)
