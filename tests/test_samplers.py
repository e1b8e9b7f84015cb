"""Exact tests of the reverse steps and loops (ddpm_helpers.method.samplers, run by ddpm_helpers.engine.sampling).

A plain float64 NumPy reference, written here from the papers' formulas, shares only the betas
and the noise draws with the package (alpha_bar, beta_tilde and the posterior coefficients are
recomputed from the betas). At T = 20 every step is compared exactly (up to float32 round-off):
a swapped variance, a time index off by one or a missing factor in DDIM's sigma changes the
result by far more than the tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ddpm_helpers.engine import sampling
from ddpm_helpers.method import samplers
from ddpm_helpers.method.schedules import make_schedule

T = 20
SHAPE = (4, 3, 2, 1)
ATOL = 2e-4


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("cosine", T)


# ---------------------------------------------------------------- the NumPy reference


def tables(betas):
    betas = np.asarray(betas, np.float64)
    alpha_bars = np.cumprod(1.0 - betas)
    return betas, alpha_bars, np.concatenate([[1.0], alpha_bars[:-1]])


def np_predict_noise(x, i):
    """The test's 'network': depends on x and on the step (array position i)."""
    return np.tanh(0.8 * x + 0.05 * (i + 1))


def tf_predict_noise(x, t):
    step = tf.reshape(tf.cast(t + 1, tf.float32), [-1] + [1] * (x.shape.rank - 1))
    return tf.tanh(0.8 * x + 0.05 * step)


def np_ddpm_step(betas, x, i, z, variance, clip):
    """Eqs. (eq-x0-hat) and (eq-p-sample) at array position i (the paper's t = i + 1)."""
    beta, ab, ab_prev = tables(betas)
    eps = np_predict_noise(x, i)
    x0 = (x - np.sqrt(1 - ab[i]) * eps) / np.sqrt(ab[i])
    if clip:
        x0 = np.clip(x0, -1, 1)
    mean = (np.sqrt(ab_prev[i]) * beta[i] / (1 - ab[i]) * x0
            + np.sqrt(1 - beta[i]) * (1 - ab_prev[i]) / (1 - ab[i]) * x)
    var = beta[i] * (1 - ab_prev[i]) / (1 - ab[i]) if variance == "beta_tilde" else beta[i]
    return mean + (np.sqrt(var) * z if i > 0 else 0.0)


def np_ddim_step(betas, x, i, i_prev, eta, z, clip):
    """Eqs. (eq-ddim-step) and (eq-ddim-sigma) from position i to i_prev (None: to x_0)."""
    _, ab, _ = tables(betas)
    a_t, a_prev = ab[i], (1.0 if i_prev is None else ab[i_prev])
    eps = np_predict_noise(x, i)
    x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
    if clip:
        x0 = np.clip(x0, -1, 1)
        eps = (x - np.sqrt(a_t) * x0) / np.sqrt(1 - a_t)
    sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t)) * np.sqrt(1 - a_t / a_prev)
    return np.sqrt(a_prev) * x0 + np.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps + sigma * z


def noise(seed, i, shape=SHAPE):
    return sampling.step_noise(seed, 0, i, shape, T).numpy().astype(np.float64)


def np_ddpm(betas, seed, variance="beta_tilde", clip=True, stop=0):
    """x after the DDPM steps from x_T down to array position ``stop`` (all of them: x_0)."""
    x = noise(seed, T)
    for i in range(T - 1, stop - 1, -1):
        x = np_ddpm_step(betas, x, i, noise(seed, i), variance, clip)
    return x


# The array positions DDIM visits at T = 20, written out by hand (not computed by the package's formula):
# S positions evenly spaced from 0 to T - 1 = 19, both included, each rounded to the nearest integer
# (a tie such as 9.5 goes to the even neighbour, 10); one step starts at x_T's step, position 19.
DDIM_GRIDS = {
    1: [19],
    2: [0, 19],
    5: [0, 5, 10, 14, 19],  # 0, 4.75, 9.5, 14.25, 19
    7: [0, 3, 6, 10, 13, 16, 19],  # 0, 3.17, 6.33, 9.5, 12.67, 15.83, 19
    20: list(range(20)),
}


def np_ddim(betas, seed, steps, eta, clip=True):
    taus = DDIM_GRIDS[steps]
    x = noise(seed, T)
    for k in range(len(taus) - 1, -1, -1):
        x = np_ddim_step(betas, x, taus[k], taus[k - 1] if k > 0 else None, eta, noise(seed, taus[k]), clip)
    return x


def test_reference_is_not_trivial(schedule):
    # The two variances and the DDIM noise levels differ by far more than the tolerance.
    assert np.abs(np_ddpm(schedule.betas, 1, "beta") - np_ddpm(schedule.betas, 1)).max() > 50 * ATOL
    assert np.abs(np_ddim(schedule.betas, 1, 7, 0.5) - np_ddim(schedule.betas, 1, 7, 0.0)).max() > 50 * ATOL


# ---------------------------------------------------------------- single steps


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_step_matches_numpy_at_every_t(schedule, variance, clip):
    rng = np.random.default_rng(0)
    for i in range(T):
        x = rng.standard_normal(SHAPE)
        z = rng.standard_normal(SHAPE)
        got = samplers.p_sample(schedule, sampling.as_noise_predictor(tf_predict_noise), tf.constant(x, tf.float32),
                                tf.fill([SHAPE[0]], i), tf.constant(z, tf.float32), variance=variance, clip_x0=clip)
        want = np_ddpm_step(schedule.betas, x, i, z, variance, clip)
        np.testing.assert_allclose(got.numpy(), want, atol=ATOL, rtol=1e-4, err_msg=f"t = {i + 1}, {variance}")


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("i,i_prev", [(19, 12), (12, 11), (6, 0), (0, None), (9, None)],
                         ids=["skip-7", "consecutive", "to-first", "final", "final-from-10"])
def test_ddim_step_matches_numpy(schedule, eta, i, i_prev, clip):
    rng = np.random.default_rng(i)
    x = rng.standard_normal(SHAPE)
    z = rng.standard_normal(SHAPE)
    _, ab, _ = tables(schedule.betas)
    alpha_bar_prev = tf.constant(1.0 if i_prev is None else ab[i_prev], tf.float32)
    got = samplers.ddim_step(schedule, sampling.as_noise_predictor(tf_predict_noise), tf.constant(x, tf.float32),
                             tf.fill([SHAPE[0]], i), alpha_bar_prev, tf.constant(eta), tf.constant(z, tf.float32),
                             clip_x0=clip)
    np.testing.assert_allclose(got.numpy(), np_ddim_step(schedule.betas, x, i, i_prev, eta, z, clip),
                               atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("steps", sorted(DDIM_GRIDS))
def test_ddim_timesteps_are_the_hand_written_grid(steps):
    np.testing.assert_array_equal(samplers.ddim_timesteps(T, steps), DDIM_GRIDS[steps])


def test_ddim_sigma_formula():
    rng = np.random.default_rng(2)
    a_t, a_prev = rng.uniform(0.01, 0.5, 10), rng.uniform(0.5, 0.99, 10)
    want = 0.7 * np.sqrt((1 - a_prev) / (1 - a_t)) * np.sqrt(1 - a_t / a_prev)
    np.testing.assert_allclose(samplers.ddim_sigma(a_t, a_prev, 0.7).numpy(), want, rtol=1e-6)


# ---------------------------------------------------------------- whole loops


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_sampler_matches_numpy_loop(schedule, variance):
    got = sampling.ddpm_sample(tf_predict_noise, schedule, SHAPE, seed=3, variance=variance).images
    np.testing.assert_allclose(got, np_ddpm(schedule.betas, 3, variance), atol=ATOL)
    unclipped = sampling.ddpm_sample(tf_predict_noise, schedule, SHAPE, seed=3, variance=variance, clip_x0=False)
    np.testing.assert_allclose(unclipped.images, np_ddpm(schedule.betas, 3, variance, clip=False),
                               atol=ATOL, rtol=1e-5)  # unclipped, this predictor drifts far


@pytest.mark.parametrize("steps,eta", [(7, 0.0), (7, 0.5), (5, 1.0), (20, 0.3), (1, 0.0), (2, 1.0)])
def test_ddim_sampler_matches_numpy_loop(schedule, steps, eta):
    got = sampling.ddim_sample(tf_predict_noise, schedule, SHAPE, steps=steps, eta=eta, seed=4).images
    np.testing.assert_allclose(got, np_ddim(schedule.betas, 4, steps, eta), atol=ATOL)


def test_ddim_eta1_on_every_step_is_ddpm_by_the_numpy_reference(schedule):
    # With eta = 1 on all T steps, DDIM's sigma is sqrt(beta_tilde) and its mean the posterior mean.
    ddim = sampling.ddim_sample(tf_predict_noise, schedule, SHAPE, steps=T, eta=1.0, seed=7).images
    np.testing.assert_allclose(ddim, np_ddpm(schedule.betas, 7, "beta_tilde"), atol=ATOL)


def test_snapshots_are_the_states_at_their_times_and_only_they_reach_the_host(schedule, monkeypatch):
    calls = []
    original = sampling._run_chunks

    def spy(total, advance, x, **kwargs):
        def counted(x, done, done_next):
            calls.append((done, done_next))
            return advance(x, done, done_next)

        return original(total, counted, x, **kwargs)

    monkeypatch.setattr(sampling, "_run_chunks", spy)
    result = sampling.ddpm_sample(tf_predict_noise, schedule, SHAPE, seed=5, snapshots=5)
    assert result.snapshot_times == [20, 15, 10, 5, 0]
    assert result.snapshots.shape == (5,) + SHAPE
    for state, time in zip(result.snapshots, result.snapshot_times):  # x_t = state after steps T..t+1
        np.testing.assert_allclose(state, np_ddpm(schedule.betas, 5, stop=time), atol=ATOL)
    # The loop ran in 4 compiled chunks (one per snapshot interval), not step by step.
    assert calls == [(0, 5), (5, 10), (10, 15), (15, 20)]
    calls.clear()
    assert sampling.ddpm_sample(tf_predict_noise, schedule, SHAPE, seed=5).snapshots is None
    assert calls == [(0, 20)]
