"""Tests of ddpm_helpers.engine.sampling: exact steps and loops against NumPy, and moments of the samplers.

The first part compares single steps and whole loops at T = 20 with a plain float64 NumPy
reference written here from the papers' formulas (only the betas and the noise are shared with the
package), for a noise predictor that depends on x and t.

The second part is driven by the closed-form optimal noise predictor of Gaussian data.

For data x_0 ~ N(mu, sigma^2) (each pixel independent), x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps is
Gaussian too and the best noise prediction is E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) /
(ab sigma^2 + 1 - ab). Every sampler step is then affine in x plus Gaussian noise, so the exact
mean and variance of what a sampler returns follow from a float64 recursion written here from
the papers' formulas (independently of the package). The samplers must match it within
Monte-Carlo error, and the fine-grained ones must give back mu and sigma^2.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import tensorflow as tf

from ddpm_helpers.engine import sample_files, sampling
from ddpm_helpers.method.schedules import make_schedule

MU, SIGMA2 = 0.3, 0.25
SHAPE = (2000, 2, 2, 2)  # 16,000 independent scalar samples
N_SCALARS = int(np.prod(SHAPE))


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000)


@pytest.fixture(scope="module")
def small_schedule():
    return make_schedule("cosine", 20)


def oracle_for(schedule):
    def predict_noise(x, t):
        ab = schedule.gather("alpha_bars", t, ndim=x.shape.rank)
        return tf.sqrt(1.0 - ab) * (x - tf.sqrt(ab) * MU) / (ab * SIGMA2 + 1.0 - ab)

    return predict_noise


@pytest.fixture(scope="module")
def oracle(schedule):
    return oracle_for(schedule)


# ---- exact moments (float64 NumPy, from the papers' formulas) ----

def _oracle_eps(x, ab):
    return np.sqrt(1 - ab) * (x - np.sqrt(ab) * MU) / (ab * SIGMA2 + 1 - ab)


def _affine(f):
    b = f(0.0)
    return f(1.0) - b, b


def exact_ddpm(betas, variance="beta_tilde"):
    ab = np.cumprod(1 - betas)
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    mean, var = 0.0, 1.0
    for i in range(len(betas) - 1, -1, -1):
        def step(x):
            x0 = (x - np.sqrt(1 - ab[i]) * _oracle_eps(x, ab[i])) / np.sqrt(ab[i])
            return (betas[i] * np.sqrt(ab_prev[i]) / (1 - ab[i]) * x0
                    + (1 - ab_prev[i]) * np.sqrt(1 - betas[i]) / (1 - ab[i]) * x)

        a, b = _affine(step)
        noise = betas[i] * (1 - ab_prev[i]) / (1 - ab[i]) if variance == "beta_tilde" else betas[i]
        mean, var = a * mean + b, a * a * var + (noise if i > 0 else 0.0)
    return mean, var


def ddim_grid(T, steps):
    """DDIM's positions: k (T - 1) / (S - 1) to the nearest integer, in integer arithmetic (no float linspace).

    The package rounds a tie to the even neighbour, this rounds it up; with T - 1 = 999 odd and every
    S - 1 used here odd, k (T - 1) / (S - 1) is never a tie. Checked by hand in test_ddim_grid_by_hand.
    """
    if steps == 1:
        return [T - 1]
    return [(2 * k * (T - 1) + steps - 1) // (2 * (steps - 1)) for k in range(steps)]


def test_ddim_grid_by_hand():
    assert ddim_grid(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert ddim_grid(1000, 20)[:4] == [0, 53, 105, 158]  # 52.58, 105.16, 157.74
    assert ddim_grid(1000, 1000) == list(range(1000)) and ddim_grid(1000, 1) == [999]
    for steps in (1000, 100, 50, 20, 10):
        np.testing.assert_array_equal(sampling.ddim_timesteps(1000, steps), ddim_grid(1000, steps))


def exact_ddim(betas, steps, eta):
    T = len(betas)
    ab = np.cumprod(1 - betas)
    taus = ddim_grid(T, steps)
    mean, var = 0.0, 1.0
    for k in range(len(taus) - 1, -1, -1):
        a_t = ab[taus[k]]
        a_prev = ab[taus[k - 1]] if k > 0 else 1.0
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a_t)) * np.sqrt(1 - a_t / a_prev)

        def step(x):
            eps = _oracle_eps(x, a_t)
            x0 = (x - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
            return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - sigma**2) * eps

        a, b = _affine(step)
        mean, var = a * mean + b, a * a * var + sigma**2
    return mean, var


def assert_moments(images, mean, var, what):
    """Sample mean and variance within 4.5 standard errors of (mean, var)."""
    m, v = float(np.mean(images)), float(np.var(images))
    se_mean, se_var = np.sqrt(var / N_SCALARS), var * np.sqrt(2.0 / N_SCALARS)
    assert abs(m - mean) < 4.5 * se_mean, f"{what}: mean {m:.4f}, expected {mean:.4f} +- {se_mean:.4f}"
    assert abs(v - var) < 4.5 * se_var, f"{what}: variance {v:.4f}, expected {var:.4f} +- {se_var:.4f}"


def test_exact_recursion_is_sane(schedule):
    # Fine samplers end close to the data distribution, coarse deterministic DDIM shrinks the variance.
    m, v = exact_ddpm(schedule.betas, "beta")
    assert abs(m - MU) < 1e-3 and abs(v - SIGMA2) < 0.01
    m, v = exact_ddim(schedule.betas, 1000, 0.0)
    assert abs(m - MU) < 2e-3 and abs(v - SIGMA2) < 0.01
    assert exact_ddim(schedule.betas, 10, 0.0)[1] < 0.6 * SIGMA2


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_ddpm_oracle_matches_exact_and_data(schedule, oracle, variance):
    result = sampling.ddpm_sample(oracle, schedule, SHAPE, seed=3, clip_x0=False, variance=variance)
    assert result.images.shape == SHAPE and result.model_calls == 1000
    assert_moments(result.images, *exact_ddpm(schedule.betas, variance), f"DDPM {variance}")
    assert_moments(result.images, MU, SIGMA2, f"DDPM {variance} vs the data")


@pytest.mark.parametrize("steps,eta", [(1000, 0.0), (1000, 1.0), (100, 0.5), (50, 1.0), (20, 0.0), (10, 0.0), (10, 1.0)])
def test_ddim_oracle_matches_exact(schedule, oracle, steps, eta):
    result = sampling.ddim_sample(oracle, schedule, SHAPE, steps=steps, eta=eta, seed=4, clip_x0=False)
    assert result.model_calls == steps
    assert_moments(result.images, *exact_ddim(schedule.betas, steps, eta), f"DDIM {steps} steps, eta {eta}")
    if steps == 1000:  # as fine as DDPM: back to the data distribution
        assert_moments(result.images, MU, SIGMA2, f"DDIM {steps} steps, eta {eta} vs the data")


def test_ddim_eta0_is_deterministic(small_schedule):
    oracle = oracle_for(small_schedule)
    x_T = np.random.default_rng(1).standard_normal((4, 2, 2, 1)).astype(np.float32)
    a = sampling.ddim_sample(oracle, small_schedule, x_T.shape, x_T=x_T, steps=7, eta=0.0, seed=1).images
    b = sampling.ddim_sample(oracle, small_schedule, x_T.shape, x_T=x_T, steps=7, eta=0.0, seed=2).images
    np.testing.assert_array_equal(a, b)
    c = sampling.ddim_sample(oracle, small_schedule, x_T.shape, x_T=x_T, steps=7, eta=0.5, seed=2).images
    assert np.abs(a - c).max() > 1e-3  # with eta > 0 the seed matters


def test_fixed_seed_reproduces_and_chunking_does_not_matter(small_schedule):
    oracle = oracle_for(small_schedule)
    shape = (6, 2, 2, 1)
    a = sampling.ddpm_sample(oracle, small_schedule, shape, seed=5).images
    b = sampling.ddpm_sample(oracle, small_schedule, shape, seed=5, progress=True, snapshots=4).images
    c = sampling.ddpm_sample(oracle, small_schedule, shape, seed=6).images
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    d = sampling.ddim_sample(oracle, small_schedule, shape, steps=5, eta=1.0, seed=5).images
    e = sampling.ddim_sample(oracle, small_schedule, shape, steps=5, eta=1.0, seed=5, snapshots=3).images
    np.testing.assert_array_equal(d, e)


def test_too_many_snapshots_is_an_error(small_schedule):
    with pytest.raises(ValueError, match="at most 8"):
        sampling.ddim_sample(oracle_for(small_schedule), small_schedule, (2, 2, 2, 1), steps=7, snapshots=9)


def test_last_ddpm_step_adds_no_noise(small_schedule):
    oracle = oracle_for(small_schedule)
    T = small_schedule.timesteps
    shape = (5, 2, 2, 1)
    result = sampling.ddpm_sample(oracle, small_schedule, shape, seed=2, snapshots=T + 1)
    assert result.snapshot_times[-2] == 1  # x_1, the input of the last step
    x1 = tf.constant(result.snapshots[-2])
    t0 = tf.zeros([shape[0]], tf.int32)
    mean, _, _, _ = sampling.p_mean_variance(small_schedule, sampling.as_noise_predictor(oracle), x1, t0)
    np.testing.assert_allclose(result.images, mean.numpy(), atol=1e-6)
    # ... and p_sample at t = 0 ignores its noise, while t = 1 does not.
    big = tf.fill(x1.shape, 5.0)
    step0 = sampling.p_sample(small_schedule, sampling.as_noise_predictor(oracle), x1, t0, big)
    np.testing.assert_allclose(step0.numpy(), mean.numpy(), atol=1e-6)
    step1 = sampling.p_sample(small_schedule, sampling.as_noise_predictor(oracle), x1, t0 + 1, big)
    mean1, _, _, _ = sampling.p_mean_variance(small_schedule, sampling.as_noise_predictor(oracle), x1, t0 + 1)
    assert np.abs(step1.numpy() - mean1.numpy()).min() > 0.1


def test_keras_models_conditional_and_guidance(small_schedule):
    import keras

    x_in = keras.Input((2, 2, 1))
    t_in = keras.Input((), dtype="int32")
    y_in = keras.Input((), dtype="int32")
    shift = keras.layers.Embedding(4, 1)(y_in)  # (B, 1)
    out = keras.layers.Lambda(lambda v: v[0] * 0.0 + keras.ops.reshape(v[1], (-1, 1, 1, 1)))([x_in, shift])
    model = keras.Model([x_in, t_in, y_in], out)
    x = tf.zeros((3, 2, 2, 1))
    t = tf.constant([1, 1, 1])
    labels = tf.constant([0, 1, 2])
    cond = sampling.as_noise_predictor(model)(x, t, labels).numpy()
    uncond = sampling.as_noise_predictor(model)(x, t, tf.constant([3, 3, 3])).numpy()
    for w, expected in [(0.0, uncond), (1.0, cond), (3.0, uncond + 3.0 * (cond - uncond))]:
        guided = sampling.classifier_free_guidance(model, w, null_label=3)(x, t, labels).numpy()
        np.testing.assert_allclose(guided, expected, atol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        sampling.ddpm_sample(model, small_schedule, (3, 2, 2, 1))
    result = sampling.ddim_sample(sampling.classifier_free_guidance(model, 2.0, 3), small_schedule, (3, 2, 2, 1),
                                  steps=3, labels=[0, 1, 2])
    assert np.all(np.isfinite(result.images))


@pytest.mark.parametrize("kwargs,message", [
    (dict(sampler="ddim", steps=0), "between 1 and T"),
    (dict(sampler="ddim", steps=21), "between 1 and T"),
    (dict(sampler="ddim", steps=5, eta=1.5), "eta must lie in"),
    (dict(sampler="ddpm", steps=5), "DDPM always runs all T"),
    (dict(sampler="euler"), "Unknown sampler"),
    (dict(sampler="ddpm", variance="big"), "Unknown variance"),
    (dict(sampler="ddpm", labels=[1, 2]), "labels must be integers of shape"),
])
def test_bad_arguments(small_schedule, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sampling.sample(oracle_for(small_schedule), small_schedule, 3, (2, 2, 1), **kwargs)


def test_eager_loop_matches_compiled(small_schedule):
    oracle = oracle_for(small_schedule)
    shape = (4, 2, 2, 1)
    compiled = sampling.ddpm_sample(oracle, small_schedule, shape, seed=9).images
    eager = sampling.ddpm_sample_eager(oracle, small_schedule, shape, seed=9)
    np.testing.assert_allclose(eager, compiled, atol=1e-5)


def test_default_labels():
    assert sample_files.default_labels(5, None) is None
    np.testing.assert_array_equal(sample_files.default_labels(12, 10), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])


def test_step_noise_is_standard_normal_and_the_same_under_xla():
    import tensorflow as tf
    from scipy import stats

    eager = sampling.step_noise(3, 1, 7, (64, 8, 8, 1), 1000).numpy()
    xla = tf.function(lambda step: sampling.step_noise(3, 1, step, (64, 8, 8, 1), 1000), jit_compile=True)
    np.testing.assert_allclose(xla(tf.constant(7)).numpy(), eager, atol=1e-5)
    many = sampling.step_noise(0, 0, 0, (1_000_000,), 1000).numpy()
    assert np.all(np.isfinite(many))
    assert stats.kstest(many, "norm").pvalue > 1e-3
    assert not np.allclose(sampling.step_noise(3, 1, 8, (64, 8, 8, 1), 1000).numpy(), eager)


# ---- labels, compiled-loop cache, broken samples ----

def _tiny_model(conditional=False):
    import keras

    x_in = keras.Input((2, 2, 1))
    t_in = keras.Input((), dtype="int32")
    inputs = [x_in, t_in]
    if conditional:
        inputs.append(keras.Input((), dtype="int32"))
    return keras.Model(inputs, keras.layers.Dense(1)(x_in))


def test_each_image_gets_its_own_label_in_every_batch(small_schedule):
    # A predictor whose guess of x_0 is the label / 10: deterministic DDIM ends exactly there.
    def predict_noise(x, t, labels):
        ab = small_schedule.gather("alpha_bars", t, ndim=4)
        target = tf.reshape(tf.cast(labels, tf.float32) / 10.0, [-1, 1, 1, 1])
        return (x - tf.sqrt(ab) * target) / tf.sqrt(1.0 - ab)

    labels = np.array([3, 1, 4, 1, 5, 9, 2], dtype=np.int32)
    for batch_size in (None, 3, 2):
        result = sampling.sample(predict_noise, small_schedule, 7, (2, 2, 1), sampler="ddim", steps=4, labels=labels,
                                 batch_size=batch_size)
        np.testing.assert_array_equal(result.labels, labels)
        np.testing.assert_allclose(result.images[:, 0, 0, 0], labels / 10.0, atol=1e-4)
        np.testing.assert_allclose(result.images, np.broadcast_to(labels[:, None, None, None] / 10.0, (7, 2, 2, 1)),
                                   atol=1e-4)


def test_compiled_loops_are_reused_and_die_with_their_model(small_schedule):
    model = _tiny_model()
    first = sampling.ddim_loop(small_schedule, model).compiled
    assert sampling.ddim_loop(small_schedule, sampling.as_noise_predictor(model)).compiled is first
    assert sampling.ddpm_loop(small_schedule, model).compiled is not first
    sampling.ddim_sample(model, small_schedule, (3, 2, 2, 1), steps=3, seed=1)
    sampling.ddim_sample(model, small_schedule, (3, 2, 2, 1), steps=5, eta=0.5, seed=2)
    traces = first.experimental_get_tracing_count()  # the second length of taus generalises it
    for steps, eta in ((7, 0.2), (9, 1.0), (4, 0.0)):
        sampling.ddim_sample(model, small_schedule, (3, 2, 2, 1), steps=steps, eta=eta, seed=3)
    assert first.experimental_get_tracing_count() == traces <= 2  # other step counts and eta: no trace
    assert len(sampling.compiled_loops(model)) == 2
    alive = weakref.ref(model)
    del model, first
    gc.collect()
    assert alive() is None  # the cache did not keep the model (and its compiled loops) alive


def test_nan_samples_raise(small_schedule):
    from ddpm_helpers.notebook.plotting import to_uint8

    def broken(x, t):
        return x * float("nan")

    with pytest.raises(ValueError, match="3 of 3 samples hold NaN"):
        sampling.ddpm_sample(broken, small_schedule, (3, 2, 2, 1))
    with pytest.raises(ValueError, match="NaN"):
        sampling.sample(broken, small_schedule, 3, (2, 2, 1), sampler="ddim", steps=3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        to_uint8(np.array([0.0, np.nan, 0.5]))
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 1.0])), [0, 128, 255])


def test_to_uint8_clips_values_outside_the_model_range():
    from ddpm_helpers.notebook.plotting import to_display_range, to_uint8

    # Samples overshoot [-1, 1]; without the clip, 1.5 would wrap around to 63 and -1.5 to 192 or so.
    values = np.array([-3.0, -1.5, -1.0001, -1.0, 0.0, 1.0, 1.0001, 1.5, 3.0])
    assert to_uint8(values).tolist() == [0, 0, 0, 0, 128, 255, 255, 255, 255]
    assert to_display_range(values).tolist() == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]


def test_cached_samples_reload_redraw_and_refuse_nan(small_schedule, tmp_path, capsys):
    import json
    import types

    from ddpm_helpers import get_profile

    profile = get_profile("smoke").replace(image_size=2)
    run = types.SimpleNamespace(schedule=small_schedule, ema_model=_tiny_model(), run_dir=tmp_path, profile=profile,
                                num_classes=None)
    drawn = sample_files.cached_samples(run, 4, sampler="ddim", steps=3, progress=False)
    loaded = sample_files.cached_samples(run, 4, sampler="ddim", steps=3, progress=False)
    assert loaded.info["cached"] and not drawn.info["cached"]
    np.testing.assert_array_equal(loaded.images, drawn.images)
    path = drawn.info["path"]
    with open(path, "wb") as handle:  # a truncated file is drawn again, with a warning
        handle.write(b"PK\x03\x04 truncated")
    again = sample_files.cached_samples(run, 4, sampler="ddim", steps=3, progress=False)
    assert "cannot read the cached samples" in capsys.readouterr().err
    np.testing.assert_array_equal(again.images, drawn.images)
    with np.load(path) as stored:
        meta = str(stored["meta"])
    np.savez_compressed(path, images=np.full((4, 2, 2, 1), np.nan, np.float32), meta=np.array(meta))
    assert json.loads(meta)["settings"]["steps"] == 3
    with pytest.raises(ValueError, match="cached samples in .* hold NaN"):
        sample_files.cached_samples(run, 4, sampler="ddim", steps=3, progress=False)
