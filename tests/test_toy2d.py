"""Tests of ddpm_helpers.playground.toy2d: the 2-D data sets, the sliced Wasserstein distance, the MLP and its training."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from ddpm_helpers.playground import toy2d, toy_training
from ddpm_helpers.method.schedules import make_schedule

# ---------------------------------------------------------------- data


@pytest.mark.parametrize("name", toy2d.TOY_DATASETS)
def test_toy_data_shape_dtype_scale_and_labels(name):
    points = toy2d.make_toy_data(name, 5000, seed=3)
    assert points.shape == (5000, 2) and points.dtype == np.float32
    assert np.all(np.isfinite(points))
    np.testing.assert_allclose(points.mean(0), 0.0, atol=0.1)
    np.testing.assert_allclose(points.std(0), 1.0, atol=0.1)
    again, labels = toy2d.make_toy_data(name, 5000, seed=3, labels=True)
    np.testing.assert_array_equal(again, points)  # labels=True does not change the points
    assert labels.shape == (5000,) and labels.dtype == np.int32
    counts = np.bincount(labels, minlength=toy2d.TOY_NUM_CLASSES[name])
    assert len(counts) == toy2d.TOY_NUM_CLASSES[name]
    np.testing.assert_allclose(counts / 5000, 1 / len(counts), atol=0.03)  # balanced classes


@pytest.mark.parametrize("name", toy2d.TOY_DATASETS)
def test_toy_data_is_reproducible_and_seeds_differ(name):
    np.testing.assert_array_equal(toy2d.make_toy_data(name, 100, seed=1), toy2d.make_toy_data(name, 100, seed=1))
    assert not np.allclose(toy2d.make_toy_data(name, 100, seed=1), toy2d.make_toy_data(name, 100, seed=2))


def test_two_moons_picks_each_moon_independently():
    # Stratified data (exactly n/2 per moon) would make the data-vs-data floor too optimistic.
    shares = [np.mean(toy2d.make_toy_data("two_moons", 200, seed=s, labels=True)[1]) for s in range(200)]
    assert np.std(shares) == pytest.approx(math.sqrt(0.25 / 200), rel=0.25)


def test_moons_lie_on_their_half_circles():
    points, labels = toy2d.make_toy_data("two_moons", 2000, seed=0, labels=True)
    raw = points * toy2d._MOONS_SCALE + toy2d._MOONS_CENTRE
    centres = np.where(labels[:, None] == 0, [0.0, 0.0], [1.0, 0.5])
    radius = np.linalg.norm(raw - centres, axis=1)
    assert abs(np.median(radius) - 1.0) < 0.01 and np.percentile(np.abs(radius - 1.0), 99) < 0.2


def test_nearest_gaussian_recovers_the_labels():
    points, labels = toy2d.make_toy_data("eight_gaussians", 2000, seed=0, labels=True)
    assert np.mean(toy2d.nearest_gaussian(points) == labels) > 0.999
    np.testing.assert_array_equal(toy2d.nearest_gaussian(toy2d.EIGHT_GAUSSIAN_CENTRES), np.arange(8))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        toy2d.nearest_gaussian(np.zeros((3, 3)))


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_toy_data_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="positive number of points"):
        toy2d.make_toy_data("two_moons", bad)


def test_toy_data_rejects_unknown_names():
    with pytest.raises(ValueError, match="Unknown toy data set 'spiral'.*two_moons"):
        toy2d.make_toy_data("spiral", 10)


# ---------------------------------------------------------------- sliced Wasserstein


def test_identical_clouds_are_at_distance_zero():
    a = toy2d.make_toy_data("swiss_roll", 500, seed=0)
    assert toy2d.sliced_wasserstein(a, a) == pytest.approx(0.0, abs=1e-12)
    assert toy2d.sliced_wasserstein(a, a[::-1]) == pytest.approx(0.0, abs=1e-12)  # order does not matter


def test_a_shift_gives_its_length_over_sqrt2():
    # For a shift s, every projection moves by u.s, so SW^2 = E_u[(u.s)^2] = |s|^2 / 2 in 2-D.
    a = toy2d.make_toy_data("eight_gaussians", 300, seed=0)
    shift = np.array([0.3, -0.4])
    value = toy2d.sliced_wasserstein(a, a + shift, num_projections=20_000)
    assert value == pytest.approx(0.5 / math.sqrt(2), rel=0.01)
    far = toy2d.sliced_wasserstein(a, a + 2 * shift, num_projections=20_000)
    assert far == pytest.approx(2 * value, rel=0.01)


def test_one_dimensional_case_matches_optimal_assignment():
    # In 1-D every projection is +-1, so SW_2 is W_2 itself; compute W_2 by brute-force optimal transport.
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 1)), rng.exponential(size=(40, 1))
    cost = (a - b.T) ** 2
    rows, cols = linear_sum_assignment(cost)
    exact = math.sqrt(cost[rows, cols].mean())
    assert toy2d.sliced_wasserstein(a, b, num_projections=7) == pytest.approx(exact, rel=1e-12)


def test_two_dimensional_case_matches_an_independent_computation():
    # Independent: each projection's W_2 by optimal assignment (no sorting), averaged over the same directions.
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(25, 2)), rng.uniform(-1, 1, size=(25, 2))
    directions = np.random.default_rng(5).standard_normal((2, 16))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    squared = []
    for u in directions.T:
        cost = (np.outer(a @ u, np.ones(25)) - np.outer(np.ones(25), b @ u)) ** 2
        rows, cols = linear_sum_assignment(cost)
        squared.append(cost[rows, cols].mean())
    assert toy2d.sliced_wasserstein(a, b, num_projections=16, seed=5) == pytest.approx(math.sqrt(np.mean(squared)),
                                                                                      rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 40), st.floats(0.1, 10.0), st.integers(0, 1000))
def test_distance_is_symmetric_nonnegative_and_scales(n, scale, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + 1.0
    d = toy2d.sliced_wasserstein(a, b)
    assert d > 0
    assert toy2d.sliced_wasserstein(b, a) == pytest.approx(d, rel=1e-12)
    assert toy2d.sliced_wasserstein(scale * a, scale * b) == pytest.approx(scale * d, rel=1e-9)


def test_distance_rejects_mismatched_clouds():
    with pytest.raises(ValueError, match="same shape"):
        toy2d.sliced_wasserstein(np.zeros((5, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="same shape"):
        toy2d.sliced_wasserstein(np.zeros(5), np.zeros(5))


def test_evaluate_toy_floor_and_ratio():
    fresh = toy2d.make_toy_data("two_moons", 1000, seed=123)
    good = toy2d.evaluate_toy(fresh, "two_moons")
    assert good.floor > 0 and 0.5 < good.ratio < 2.0 and len(good.floors) == 5
    bad = toy2d.evaluate_toy(fresh * 0.7, "two_moons")
    assert bad.ratio > 3.0 and bad.floor == pytest.approx(good.floor)
    assert "ratio" in good.summary()
    with pytest.raises(ValueError, match="NaN"):
        toy2d.evaluate_toy(np.full((10, 2), np.nan), "two_moons")
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        toy2d.evaluate_toy(np.zeros((10, 3)), "two_moons")


# ---------------------------------------------------------------- the denoiser and its training


def test_mlp_denoiser_shapes():
    model = toy2d.build_mlp_denoiser(hidden=16, depth=2, time_embedding_dim=8)
    x, t = np.zeros((5, 2), np.float32), np.array([0, 1, 2, 50, 99], np.int32)
    assert tuple(model([x, t]).shape) == (5, 2)
    conditional = toy2d.build_mlp_denoiser(hidden=16, depth=1, time_embedding_dim=8, num_classes=3)
    assert len(conditional.inputs) == 3
    assert conditional.get_layer("label_embedding").input_dim == 4  # three classes and the null label
    out = conditional([x, t, np.array([0, 1, 2, 3, 3], np.int32)])
    assert tuple(out.shape) == (5, 2)
    wide = toy2d.build_mlp_denoiser(hidden=8, depth=1, time_embedding_dim=8, data_dim=5)
    assert tuple(wide([np.zeros((3, 5), np.float32), t[:3]]).shape) == (3, 5)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden=0), "hidden must be a positive integer"),
    (dict(depth=1.5), "depth must be a positive integer"),
    (dict(time_embedding_dim=7), "time_embedding_dim must be even"),
    (dict(num_classes=0), "num_classes must be a positive integer"),
])
def test_mlp_denoiser_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        toy2d.build_mlp_denoiser(**kwargs)


def test_toy_settings_per_profile():
    from ddpm_helpers import get_profile

    smoke, default = toy_training.toy_settings(get_profile("smoke")), toy_training.toy_settings(get_profile("default"))
    assert smoke.train_steps < default.train_steps and smoke.num_samples <= default.num_samples
    assert toy_training.toy_settings(get_profile("seed")).train_steps == default.train_steps


def _tiny(**kwargs):
    return toy2d.build_mlp_denoiser(hidden=32, depth=2, time_embedding_dim=16, **kwargs)


def test_train_toy_learns_the_eight_gaussians():
    from ddpm_helpers.engine import sampling

    schedule = make_schedule("linear", 50, beta_start=1e-3, beta_end=0.2)
    data = toy2d.make_toy_data("eight_gaussians", 4000, seed=0)
    run = toy_training.train_toy(data, schedule, steps=600, batch_size=128, learning_rate=3e-3, ema_decay=0.9,
                          build_model=_tiny, progress=False)
    losses = np.array(run.history["loss"])
    assert losses[-100:].mean() < 0.8 * losses[:20].mean()
    samples = sampling.ddpm_sample(run.ema_model, schedule, (1000, 2), seed=0, clip_x0=False).images
    learned = toy2d.evaluate_toy(samples, "eight_gaussians", repeats=2)
    noise = toy2d.evaluate_toy(np.random.default_rng(0).standard_normal((1000, 2)), "eight_gaussians", repeats=2)
    assert learned.distance < 0.5 * noise.distance


def test_train_toy_is_reproducible_and_validates():
    schedule = make_schedule("linear", 20)
    data = toy2d.make_toy_data("two_moons", 300, seed=0)
    first = toy_training.train_toy(data, schedule, steps=5, batch_size=16, build_model=_tiny, progress=False, seed=4)
    second = toy_training.train_toy(data, schedule, steps=5, batch_size=16, build_model=_tiny, progress=False, seed=4)
    for a, b in zip(first.ema_model.get_weights(), second.ema_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert first.history["loss"] == second.history["loss"]
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        toy_training.train_toy(data, schedule, steps=0)
    with pytest.raises(ValueError, match="needs labels"):
        toy_training.train_toy(data, schedule, steps=1, num_classes=2)
    with pytest.raises(ValueError, match=r"labels must have shape \(300,\)"):
        toy_training.train_toy(data, schedule, steps=1, labels=np.zeros(5), num_classes=2)


# ---------------------------------------------------------------- sampling helpers


def test_clipped_noise_predictor_clips_the_guess_of_x0():
    import tensorflow as tf

    from ddpm_helpers.method import diffusion

    schedule = make_schedule("linear", 100)
    x = tf.constant(np.array([[0.5, -0.2], [10.0, -10.0], [1.0, 2.0]], np.float32))
    t = tf.constant([99, 50, 0], tf.int32)

    def wild(x, t):  # a predictor whose guess of x_0 is far outside the box
        return -3.0 * x

    clipped = toy2d.clipped_noise_predictor(wild, schedule, limit=2.0)
    eps = clipped(x, t)
    x0 = diffusion.predict_x0_from_noise(schedule, x, t, eps).numpy()
    unclipped = diffusion.predict_x0_from_noise(schedule, x, t, wild(x, t)).numpy()
    np.testing.assert_allclose(x0, np.clip(unclipped, -2.0, 2.0), rtol=1e-4, atol=1e-3)
    assert np.abs(unclipped).max() > 2.0 and np.abs(x0).max() <= 2.0 + 1e-3

    def tame(x, t):  # guesses inside the box are left alone
        return 0.1 * x

    np.testing.assert_allclose(toy2d.clipped_noise_predictor(tame, schedule, limit=100.0)(x, t).numpy(),
                               tame(x, t).numpy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="limit must be positive"):
        toy2d.clipped_noise_predictor(tame, schedule, limit=0.0)


def test_cloud_animation_frames_and_errors():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snapshots = np.random.default_rng(0).normal(size=(4, 30, 2))
    anim, fig = toy2d.cloud_animation(snapshots, [3, 2, 1, 0], hold=2)
    assert len(list(anim.new_frame_seq())) == 6
    assert anim.to_jshtml(fps=5).count("data:image/png;base64") == 6  # it renders, one image per frame
    plt.close(fig)
    with pytest.raises(ValueError, match=r"\(K, N, 2\)"):
        toy2d.cloud_animation(np.zeros((4, 30, 3)))
    with pytest.raises(ValueError, match="3 times for 4 snapshots"):
        toy2d.cloud_animation(snapshots, [2, 1, 0])
