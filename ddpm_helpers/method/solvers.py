"""Solvers of the probability-flow ODE: Euler (DDIM), Heun and DPM-Solver++(2M).

Chapter "Sampling past Euler" (``sec-solvers``). In the scaled coordinates of Karras et al. (2022),
``y = x / alpha`` and ``sigma = sqrt(1 - alpha_bar) / sqrt(alpha_bar)``, the deterministic
sampler of DDIM follows the ODE

    dy / dsigma = (y - D(y, sigma)) / sigma                       Eq. (15.1) (``eq-pf-ode-sigma``)

where ``D(y, sigma)`` is the denoiser, the network's guess of x_0. Every solver here takes a
``denoise(y, sigma)`` and a decreasing sequence of sigmas (the last may be 0, which returns the
last guess of x_0); an increasing sequence runs the ODE forwards, which is DDIM inversion.

- :func:`karras_sigmas`: the rho-spacing of Karras et al., Eq. (15.2) (``eq-karras-sigmas``);
- :func:`euler`: one network call per step; on the schedule's own sigmas it is DDIM with eta = 0;
- :func:`heun`: Euler, then the trapezoidal correction (two calls per step, second order);
- :func:`dpm_solver_2m`: DPM-Solver++(2M) of Lu et al. (2022), second order with one call per
  step, by reusing the previous step's x_0 (Eq. (15.3) (``eq-dpm-2m``));
- :func:`denoiser_from_noise_predictor`: a trained noise predictor as ``denoise(y, sigma)``, for
  sigmas of the schedule (:func:`schedule_sigmas`, :func:`nearest_schedule_sigmas`).

The solvers use only arithmetic on ``y``, so NumPy arrays and TensorFlow tensors both work.
"""

from __future__ import annotations

import math

import numpy as np


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """``steps`` sigmas from ``sigma_max`` down to ``sigma_min``, evenly spaced in sigma^(1/rho).

    Eq. (15.2) (``eq-karras-sigmas``); rho = 1 is even spacing in sigma, large rho crowds the
    steps near sigma_min, where the images get their details.
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"Need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}.")
    if steps < 2:
        raise ValueError(f"Need at least 2 sigmas (one step), got steps={steps}.")
    ramp = np.linspace(0.0, 1.0, steps)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (high + ramp * (low - high)) ** rho


def euler(denoise, y, sigmas):
    """Euler's method on Eq. (15.1) (``eq-pf-ode-sigma``): one denoiser call per step."""
    sigmas = [float(s) for s in sigmas]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        slope = (y - denoise(y, s)) / s
        y = y + (s_next - s) * slope
    return y


def heun(denoise, y, sigmas):
    """Heun's method (Karras et al. 2022, Algorithm 1 without noise): an Euler step, then the mean
    of the slopes at both ends; the step to sigma = 0 stays an Euler step. Eq. (15.1) (``eq-pf-ode-sigma``)."""
    sigmas = [float(s) for s in sigmas]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        slope = (y - denoise(y, s)) / s
        y_euler = y + (s_next - s) * slope
        if s_next == 0:
            y = y_euler
            continue
        slope_next = (y_euler - denoise(y_euler, s_next)) / s_next
        y = y + (s_next - s) * (slope + slope_next) / 2
    return y


def dpm_solver_2m(denoise, y, sigmas):
    """DPM-Solver++(2M) (Lu et al. 2022) in log-sigma time, Eq. (15.3) (``eq-dpm-2m``).

    With lambda = -log sigma and h the step in lambda, the exact solution weighs x_0 by
    1 - exp(-h); the first step (and the step to 0) uses the current guess, which is DDIM; later
    steps extrapolate linearly from the last two guesses.
    """
    sigmas = [float(s) for s in sigmas]
    previous, h_previous = None, None
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x0 = denoise(y, s)
        if s_next == 0:
            return x0
        h = math.log(s) - math.log(s_next)
        guess = x0
        if previous is not None:
            r = h_previous / h
            guess = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous
        y = (s_next / s) * y - math.expm1(-h) * guess
        previous, h_previous = x0, h
    return y


def schedule_sigmas(schedule) -> np.ndarray:
    """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) for every step of ``schedule`` (increasing)."""
    return np.sqrt((1.0 - schedule.alpha_bars) / schedule.alpha_bars)


def nearest_schedule_sigmas(schedule, wanted) -> np.ndarray:
    """The schedule's sigmas nearest (in log sigma) to each of ``wanted``, repeats dropped, in the
    order given: a trained network has seen only these noise levels."""
    table = schedule_sigmas(schedule)
    index = np.abs(np.log(table)[None, :] - np.log(np.asarray(wanted))[:, None]).argmin(1)
    keep = np.concatenate([[True], index[1:] != index[:-1]])
    return table[index[keep]]


def denoiser_from_noise_predictor(predict_noise, schedule, *, x0_limit: float | None = 1.0):
    """``denoise(y, sigma)`` for a noise predictor trained on ``schedule``; ``sigma`` must be one of
    the schedule's sigmas. x = alpha y (Eq. (15.1) (``eq-pf-ode-sigma``)), then x_0 = y - sigma eps, clipped to
    [-x0_limit, x0_limit] (the pixel range, as the book's DDPM and DDIM do; None: not clipped)."""
    import tensorflow as tf

    table = schedule_sigmas(schedule)

    def denoise(y, sigma):
        sigma = float(sigma)
        index = int(np.argmin(np.abs(np.log(table) - math.log(sigma))))
        if not math.isclose(table[index], sigma, rel_tol=1e-6):
            raise ValueError(f"sigma = {sigma:g} is not a noise level of the schedule; "
                             "use nearest_schedule_sigmas(schedule, sigmas).")
        alpha = 1.0 / math.sqrt(1.0 + sigma**2)
        t = tf.fill([tf.shape(y)[0]], index)
        x0 = y - sigma * predict_noise(alpha * y, t, None)
        if x0_limit is None:
            return x0
        return tf.clip_by_value(x0, -x0_limit, x0_limit)

    return denoise
