"""Tests of ddpm_helpers.method.schedules against independent float64 references written here.

The references are deliberately written differently from the package (loops and the math
module instead of vectorised NumPy), so a shared mistake is unlikely.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_helpers.method.schedules import (
    ARRAY_NAMES,
    SCHEDULE_NAMES,
    NoiseSchedule,
    make_betas,
    make_schedule,
    schedule_from_profile,
)

# ---------------------------------------------------------------- references (float64, loops)


def ref_linear(T, beta_start=1e-4, beta_end=0.02):
    return np.array([beta_start + (beta_end - beta_start) * i / (T - 1) for i in range(T)])


def ref_quadratic(T, beta_start=1e-4, beta_end=0.02):
    a, b = math.sqrt(beta_start), math.sqrt(beta_end)
    return np.array([(a + (b - a) * i / (T - 1)) ** 2 for i in range(T)])


def ref_cosine(T, s=0.008, max_beta=0.999):
    def f(t):  # Nichol & Dhariwal Eq. (17), unnormalised; the ratio cancels f(0)
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    return np.array([min(1 - f(t) / f(t - 1), max_beta) for t in range(1, T + 1)])


def ref_sigmoid(T, start=-3.0, end=3.0, tau=1.0, max_beta=0.999):
    def sig(z):
        return 1 / (1 + math.exp(-z))

    def g(t):  # alpha_bar(t / T), not normalised
        return sig(end / tau) - sig((t / T * (end - start) + start) / tau)

    return np.array([min(1 - g(t) / g(t - 1), max_beta) for t in range(1, T + 1)])


REFERENCES = {"linear": ref_linear, "quadratic": ref_quadratic, "cosine": ref_cosine, "sigmoid": ref_sigmoid}


def ref_tables(betas):
    """Every derived table, with alpha_bar_0 = 1 and the paper's formulas written step by step."""
    T = len(betas)
    out = {k: np.zeros(T) for k in ARRAY_NAMES}
    product = 1.0
    for i, beta in enumerate(betas):
        prev = product
        product *= 1 - beta
        out["betas"][i] = beta
        out["alphas"][i] = 1 - beta
        out["alpha_bars"][i] = product
        out["alpha_bars_prev"][i] = prev
        out["sqrt_alphas"][i] = math.sqrt(1 - beta)
        out["sqrt_betas"][i] = math.sqrt(beta)
        out["sqrt_alpha_bars"][i] = math.sqrt(product)
        out["sqrt_one_minus_alpha_bars"][i] = math.sqrt(1 - product)
        out["sqrt_recip_alpha_bars"][i] = 1 / math.sqrt(product)
        out["sqrt_recipm1_alpha_bars"][i] = math.sqrt(1 / product - 1)
        out["posterior_variance"][i] = beta * (1 - prev) / (1 - product)
        out["posterior_mean_coef1"][i] = math.sqrt(prev) * beta / (1 - product)
        out["posterior_mean_coef2"][i] = math.sqrt(1 - beta) * (1 - prev) / (1 - product)
        out["snr"][i] = product / (1 - product)
        out["log_snr"][i] = math.log(product / (1 - product))
    logs = [math.log(v) for v in out["posterior_variance"][1:]]
    out["posterior_log_variance_clipped"] = np.array([logs[0]] + logs)
    return out


# ---------------------------------------------------------------- formulas vs references


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("T", [2, 10, 1000])
def test_betas_match_reference(name, T):
    np.testing.assert_allclose(make_betas(name, T), REFERENCES[name](T), rtol=1e-10, atol=1e-15)
    assert make_betas(name, T).dtype == np.float64


def test_linear_defaults_are_ddpm():
    betas = make_betas("linear", 1000)
    assert betas[0] == pytest.approx(1e-4) and betas[-1] == pytest.approx(0.02)


def test_cosine_alpha_bar_is_f_over_f0_and_last_beta_clipped():
    T, s = 1000, 0.008
    schedule = make_schedule("cosine", T)
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    expected = np.array([f[t] / f[0] for t in range(1, T + 1)])
    # Equal wherever no beta was clipped (all steps but the last for T = 1000).
    clipped = schedule.betas >= 0.999
    assert clipped.sum() == 1 and clipped[-1]
    np.testing.assert_allclose(schedule.alpha_bars[:-1], expected[:-1], rtol=1e-9)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_derived_tables_match_reference(name):
    schedule = make_schedule(name, 50)
    expected = ref_tables(REFERENCES[name](50))
    for key in ARRAY_NAMES:
        np.testing.assert_allclose(getattr(schedule, key), expected[key], rtol=1e-9, atol=1e-14, err_msg=key)
    assert schedule.timesteps == 50 and len(schedule) == 50 and schedule.name == name


def test_schedule_from_profile():
    from ddpm_helpers.profiles import get_profile

    profile = get_profile("smoke")
    schedule = schedule_from_profile(profile)
    assert schedule.timesteps == profile.timesteps and schedule.name == profile.schedule


# ---------------------------------------------------------------- gather


def test_gather_shapes_and_values():
    schedule = make_schedule("cosine", 20)
    t = tf.constant([0, 7, 19], tf.int32)
    four = schedule.gather("alpha_bars", t)
    two = schedule.gather("sqrt_one_minus_alpha_bars", t, ndim=2)
    assert four.shape == (3, 1, 1, 1) and four.dtype == tf.float32
    assert two.shape == (3, 1)
    np.testing.assert_allclose(four.numpy().ravel(), schedule.alpha_bars[[0, 7, 19]], rtol=1e-6)
    own = schedule.gather(np.arange(20.0), t, ndim=3)
    assert own.shape == (3, 1, 1) and own.numpy().ravel().tolist() == [0.0, 7.0, 19.0]
    assert schedule.gather("betas", 5).shape == (1, 1, 1, 1)


def test_gather_inside_tf_function_with_unknown_batch():
    schedule = make_schedule("linear", 100)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
    def lookup(t):
        return schedule.gather("posterior_variance", t)

    out = lookup(tf.constant([0, 1, 99]))
    assert out.shape == (3, 1, 1, 1)
    np.testing.assert_allclose(out.numpy().ravel(), schedule.posterior_variance[[0, 1, 99]], rtol=1e-6)


@pytest.mark.parametrize("bad_t", [-1, 100, [0, 100], np.array([5, -3])])
def test_gather_rejects_t_outside_range(bad_t):
    schedule = make_schedule("linear", 100)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\) = \[0, 100\)"):
        schedule.gather("betas", bad_t)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\)"):
        schedule.gather("betas", tf.constant(bad_t, tf.int32))


def test_gather_rejects_float_t_and_unknown_names():
    schedule = make_schedule("linear", 10)
    with pytest.raises(ValueError, match="integer time indices"):
        schedule.gather("betas", tf.constant([1.0]))
    with pytest.raises(ValueError, match="integer time indices"):
        schedule.gather("betas", np.array([1.5]))
    with pytest.raises(ValueError, match="Unknown schedule array 'beta'.*alpha_bars"):
        schedule.gather("beta", tf.constant([1]))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        schedule.gather(np.ones(9), tf.constant([1]))


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: make_schedule("cosnie", 10), r"Unknown schedule 'cosnie'\. Valid schedules: linear, cosine, sigmoid, quadratic"),
        (lambda: make_betas("exponential", 10), r"Valid schedules: linear, cosine"),
        (lambda: make_schedule("linear", 1), r"timesteps \(T\) must be at least 2, got 1"),
        (lambda: make_schedule("cosine", 0), r"at least 2, got 0"),
        (lambda: make_schedule("linear", 10.0), r"timesteps must be an integer"),
        (lambda: make_schedule("linear", 10, beta_start=0.02, beta_end=1e-4), r"beta_end > beta_start"),
        (lambda: make_schedule("quadratic", 10, beta_start=0.01, beta_end=0.01), r"beta_end > beta_start"),
        (lambda: make_schedule("linear", 10, beta_end=1.5), r"0 < beta_start and beta_end < 1"),
        (lambda: make_schedule("linear", 10, beta_start=0.0), r"0 < beta_start and beta_end < 1"),
        (lambda: make_schedule("cosine", 10, beta_start=0.1), r"Unknown parameter\(s\) beta_start.*accepts: s, max_beta"),
        (lambda: make_schedule("cosine", 10, s=-0.1), r"offset s must be >= 0"),
        (lambda: make_schedule("cosine", 10, max_beta=1.0), r"max_beta .* must lie in \(0, 1\)"),
        (lambda: make_schedule("sigmoid", 10, start=2.0, end=1.0), r"needs end > start"),
        (lambda: make_schedule("sigmoid", 10, tau=0.0), r"tau must be > 0"),
        (lambda: make_schedule("linear", 10, beta_end=float("nan")), r"must be a finite number"),
        (lambda: NoiseSchedule([0.1, 1.0]), r"betas must lie strictly between 0 and 1.*betas\[1\] = 1\.0"),
        (lambda: NoiseSchedule([0.0, 0.1]), r"strictly between 0 and 1.*betas\[0\] = 0\.0"),
        (lambda: NoiseSchedule([0.1, -0.2, 0.3]), r"strictly between 0 and 1.*betas\[1\]"),
        (lambda: NoiseSchedule([0.1]), r"at least 2"),
        (lambda: NoiseSchedule([[0.1, 0.2]]), r"1-D array"),
        (lambda: NoiseSchedule([0.1, float("nan")]), r"must be finite"),
        (lambda: NoiseSchedule(np.full(5000, 0.5)), r"alpha_bar underflow"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------- properties over T and parameters


@st.composite
def schedules(draw):
    name = draw(st.sampled_from(SCHEDULE_NAMES))
    T = draw(st.integers(2, 1500))
    if name in ("linear", "quadratic"):
        start = draw(st.floats(1e-6, 0.05))
        end = draw(st.floats(start * 1.01 + 1e-9, 0.3))
        params = {"beta_start": start, "beta_end": end}
    elif name == "cosine":
        params = {"s": draw(st.floats(0.0, 0.1)), "max_beta": draw(st.floats(0.5, 0.999))}
    else:
        start = draw(st.floats(-5.0, 0.0))
        params = {
            "start": start,
            "end": draw(st.floats(start + 0.5, 6.0)),
            "tau": draw(st.floats(0.5, 2.0)),
            "max_beta": draw(st.floats(0.5, 0.999)),
        }
    return name, T, params


@settings(max_examples=150, deadline=None, derandomize=True)
@given(schedules())
def test_schedule_properties(spec):
    name, T, params = spec
    schedule = make_schedule(name, T, **params)
    betas, alpha_bars = schedule.betas, schedule.alpha_bars
    assert betas.shape == (T,) and schedule.timesteps == T
    assert np.all((betas > 0) & (betas < 1))
    assert np.all((alpha_bars > 0) & (alpha_bars <= 1))
    assert np.all(np.diff(alpha_bars) < 0), "alpha_bar must be strictly decreasing"
    np.testing.assert_allclose(alpha_bars, np.cumprod(1 - betas), rtol=1e-12)
    var = schedule.posterior_variance
    assert np.all(np.isfinite(var)) and np.all(var >= 0) and var[0] == 0
    assert np.all(var <= betas * (1 + 1e-12)), "beta_tilde <= beta"
    assert np.all(np.isfinite(schedule.posterior_log_variance_clipped))
    assert np.all(np.isfinite(schedule.log_snr)) and np.all(np.diff(schedule.log_snr) < 0)
    np.testing.assert_allclose(schedule.sqrt_alpha_bars**2 + schedule.sqrt_one_minus_alpha_bars**2, 1, rtol=1e-12)
    # The posterior mean of x_{t-1} is exact for x_t = x_0 = x when there is no noise: coefficients
    # reproduce sqrt(alpha_bar_{t-1}) x_0 in expectation: coef1 + coef2 sqrt(alpha_bar_t) = sqrt(alpha_bar_{t-1}).
    np.testing.assert_allclose(
        schedule.posterior_mean_coef1 + schedule.posterior_mean_coef2 * schedule.sqrt_alpha_bars,
        np.sqrt(schedule.alpha_bars_prev),
        rtol=1e-9,
    )


def test_unknown_profile_blames_where_its_name_came_from(monkeypatch):
    from ddpm_helpers.profiles import PROFILE_ENV_VAR, get_profile

    monkeypatch.setenv(PROFILE_ENV_VAR, "default")
    with pytest.raises(ValueError, match=r"Unknown profile 'sed' \(from the argument\)") as error:
        get_profile("sed")
    assert PROFILE_ENV_VAR not in str(error.value)
    monkeypatch.setenv(PROFILE_ENV_VAR, "sed")
    with pytest.raises(ValueError, match=r"from the \$DDPM_PROFILE\).*Set e.g. DDPM_PROFILE=default"):
        get_profile()
