"""The ODE solvers, the four targets and flow matching (chapters "Four targets and the flow view"
and "Sampling past Euler")."""

import numpy as np
import pytest
import tensorflow as tf

from ddpm_helpers.engine import sampling
from ddpm_helpers.method import flows, solvers, targets
from ddpm_helpers.method.schedules import make_schedule

MU, S2 = 0.3, 0.25  # Gaussian data N(MU, S2): exact denoiser and exact ODE solution


def gaussian_denoiser(y, sigma):
    return MU + S2 / (S2 + sigma**2) * (y - MU)


def exact_flow(y, sigma_from, sigma_to):
    return MU + (y - MU) * np.sqrt((S2 + sigma_to**2) / (S2 + sigma_from**2))


def measured_order(solver, steps=(16, 32, 64, 128)):
    y0 = MU + np.sqrt(S2 + 80.0**2) * np.random.default_rng(0).standard_normal(500)
    errors = []
    for n in steps:
        sigmas = solvers.karras_sigmas(0.01, 80.0, n + 1)
        out = solver(gaussian_denoiser, y0, sigmas)
        errors.append(np.sqrt(np.mean((out - exact_flow(y0, 80.0, 0.01)) ** 2)))
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0]


@pytest.mark.parametrize("solver, order", [(solvers.euler, 1), (solvers.heun, 2),
                                           (solvers.dpm_solver_2m, 2)])
def test_each_solver_converges_at_its_order_on_gaussian_data(solver, order):
    assert abs(measured_order(solver) - order) < 0.25


def test_karras_sigmas_run_from_max_to_min_and_rho_1_is_even():
    sigmas = solvers.karras_sigmas(0.002, 80.0, 10)
    assert sigmas[0] == pytest.approx(80.0) and sigmas[-1] == pytest.approx(0.002)
    assert np.all(np.diff(sigmas) < 0)
    assert np.allclose(np.diff(solvers.karras_sigmas(1.0, 5.0, 5, rho=1.0)), -1.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        solvers.karras_sigmas(5.0, 1.0, 5)


def test_euler_on_the_schedule_sigmas_is_ddim_with_eta_0():
    schedule = make_schedule("cosine", 100)

    def oracle(x, t, labels=None):
        ab = schedule.gather("alpha_bars", t, ndim=x.shape.rank)
        return tf.sqrt(1.0 - ab) * (x - tf.sqrt(ab) * MU) / (ab * S2 + 1.0 - ab)

    x_T = np.random.default_rng(1).standard_normal((64, 3)).astype(np.float32)
    ddim = sampling.ddim_sample(oracle, schedule, x_T.shape, steps=10, x_T=x_T).images
    taus = sampling.ddim_timesteps(100, 10)
    sigmas = np.append(solvers.schedule_sigmas(schedule)[taus][::-1], 0.0)
    denoise = solvers.denoiser_from_noise_predictor(oracle, schedule)
    y = tf.constant(x_T * np.sqrt(1 + sigmas[0] ** 2), tf.float32)
    assert np.allclose(solvers.euler(denoise, y, sigmas).numpy(), ddim, atol=1e-4)
    with pytest.raises(ValueError, match="not a noise level"):
        denoise(y, 0.123)


def test_nearest_schedule_sigmas_are_on_the_table_without_repeats():
    schedule = make_schedule("linear", 1000)
    table = solvers.schedule_sigmas(schedule)
    got = solvers.nearest_schedule_sigmas(schedule, [table[-1], table[-1] * 0.999, table[10], 1e-9])
    assert list(got) == [table[-1], table[10], table[0]]


@pytest.mark.parametrize("target", targets.TARGETS)
def test_every_target_gives_back_x0_and_weighs_its_error(target):
    rng = np.random.default_rng(2)
    x0, eps = rng.standard_normal((2, 1000))
    alpha_bar = rng.uniform(0.01, 0.99, 1000)
    alpha, sigma = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
    x = alpha * x0 + sigma * eps
    value = targets.to_target(target, x0, x, alpha, sigma)
    assert np.allclose(targets.x0_from(target, value, x, alpha, sigma), x0)
    delta = 1e-3 * rng.standard_normal(1000)
    moved = targets.to_target(target, x0 + delta, x, alpha, sigma)
    weight = targets.x0_error_weight(target, alpha_bar / (1 - alpha_bar))
    assert np.allclose((moved - value) ** 2, weight * delta**2, rtol=1e-6)
    if target == "score":
        assert np.allclose(value, -eps / sigma)
    with pytest.raises(ValueError, match="Unknown target"):
        targets.x0_from("noise", value, x, alpha, sigma)


def test_the_ddpm_path_is_the_straight_path_rescaled():
    rng = np.random.default_rng(3)
    x0, eps = rng.standard_normal((2, 100))
    alpha_bar = rng.uniform(0.01, 0.99, 100)
    alpha, sigma = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
    r = flows.rf_time(alpha, sigma)
    assert np.allclose((alpha * x0 + sigma * eps) / (alpha + sigma), flows.interpolate(x0, eps, r))


def test_the_exact_velocity_has_zero_loss_and_gives_x0_back():
    rng = np.random.default_rng(4)
    x0 = tf.constant(rng.standard_normal((8, 2)), tf.float32)
    eps = tf.constant(rng.standard_normal((8, 2)), tf.float32)
    r = tf.constant(np.full((8, 1), 0.25), tf.float32)
    exact = lambda z, t: eps - x0  # noqa: E731
    assert float(flows.flow_matching_loss(exact, x0, eps, r, tf.zeros([8], tf.int32))) < 1e-12
    sigma = flows.flow_sigmas(4)[0]  # r = 1/4
    assert sigma == pytest.approx(1 / 3)
    denoise = flows.denoiser_from_velocity(exact, 4)
    y = flows.interpolate(x0, eps, 0.25) / 0.75
    assert np.allclose(denoise(y, sigma).numpy(), x0.numpy(), atol=1e-6)
    assert int(flows.time_index(0.25, 4)) == 0 and int(flows.time_index(1.0, 4)) == 3
    with pytest.raises(ValueError, match="time levels"):
        denoise(y, 0.5)


def test_flow_matching_trains_a_2d_velocity():
    from ddpm_helpers.playground import toy2d, toy_flows

    data = toy2d.make_toy_data("two_moons", 500, seed=0)
    run = toy_flows.train_flow_toy(data, steps=40, batch_size=64, learning_rate=3e-3,
                                   progress=False)
    losses = run.history["loss"]
    assert np.all(np.isfinite(losses)) and np.mean(losses[-10:]) < np.mean(losses[:10])
    with pytest.raises(ValueError, match="steps must be"):
        toy_flows.train_flow_toy(data, steps=0)


def test_flow_matching_takes_another_path_and_paired_noise():
    from ddpm_helpers.playground import toy2d, toy_flows

    data = toy2d.make_toy_data("two_moons", 300, seed=1)
    seen = []

    def recorded_straight(x0, noise, r):
        seen.append(True)
        return flows.straight_path(x0, noise, r)

    run = toy_flows.train_flow_toy(data, steps=5, batch_size=32, path=recorded_straight,
                                   noise=np.zeros_like(data), progress=False)
    assert seen and np.all(np.isfinite(run.history["loss"]))
    # With zero noise paired to every point, the target is -x_0 at every r: the exact
    # velocity network makes the loss 0.
    x0 = tf.constant(data[:8])
    loss = flows.flow_matching_loss(lambda z, t: -x0, x0, tf.zeros_like(x0),
                                    tf.fill([8, 1], 0.3), tf.zeros([8], tf.int32))
    assert float(loss) == 0.0
    with pytest.raises(ValueError, match="pair one draw"):
        toy_flows.train_flow_toy(data, steps=1, noise=np.zeros((3, 2)))


def test_flow_training_of_a_unet_starts_from_given_weights_with_one_r_per_image():
    from ddpm_helpers import get_profile
    from ddpm_helpers.engine.flow_training import train_flow
    from ddpm_helpers.method.unet import build_unet_for_profile

    profile = get_profile("smoke")
    images = np.random.default_rng(0).uniform(-1, 1, (40, 8, 8, 1)).astype(np.float32)
    start = build_unet_for_profile(profile).get_weights()
    shapes = []

    def recorded_straight(x0, noise, r):
        shapes.append(r.shape.as_list())
        return flows.straight_path(x0, noise, r)

    # Adam moves each weight by about the learning rate per step: with 1e-9 the network and
    # its average stay where they started.
    run = train_flow(images, lambda: build_unet_for_profile(profile), steps=2, batch_size=8,
                     learning_rate=1e-9, ema_decay=0.9, initial_weights=start,
                     path=recorded_straight, progress=False)
    assert shapes and all(shape == [8, 1, 1, 1] for shape in shapes)
    fresh = build_unet_for_profile(profile).get_weights()
    assert max(np.max(np.abs(a - b)) for a, b in zip(fresh, start)) > 1e-3
    for weights in (run.model.get_weights(), run.ema_model.get_weights()):
        assert max(np.max(np.abs(a - b)) for a, b in zip(weights, start)) < 1e-6
    assert np.all(np.isfinite(run.history["loss"])) and run.steps == 2
    with pytest.raises(ValueError, match="examples along its first axis"):
        train_flow(np.zeros(5), lambda: build_unet_for_profile(profile), steps=1,
                   batch_size=2, learning_rate=1e-3, ema_decay=0.9)
