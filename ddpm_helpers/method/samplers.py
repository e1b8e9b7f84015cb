"""The reverse steps and loops of DDPM and DDIM, as the chapter "Sampling" (``sec-sampling``) shows them.

Pure functions of tensors, written to read as the algorithms:

- :func:`p_sample`: one ancestral step of DDPM (Ho et al. 2020), Eq. (9.2) (``eq-p-sample``), with
  the mean of :func:`p_mean_variance`, Eq. (9.1) (``eq-x0-hat``);
- :func:`ddim_step`: one DDIM step (Song et al. 2021), Eqs. (9.5) (``eq-ddim-step``) and (9.6)
  (``eq-ddim-sigma``);
- :func:`ddpm_sample_loop`: Algorithm 2 of DDPM as the paper writes it, one eager step at a time;
- :func:`ddpm_steps` and :func:`ddim_steps`: the loops over them (Algorithm 2 of DDPM), meant to
  run inside one ``tf.function`` (:mod:`ddpm_helpers.engine.sampling` compiles and caches them);
- :func:`step_noise`: the noise z of every step, stateless in ``(seed, stream, step)``.

``predict_noise(x, t, labels)`` is a noise predictor (:mod:`ddpm_helpers.method.predictors`). Time
indices follow :mod:`ddpm_helpers.method.schedules`: array position ``i`` is the paper's ``t = i + 1``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ddpm_helpers.method.diffusion import predict_noise_from_x0, predict_x0_from_noise, q_posterior

VARIANCES = ("beta_tilde", "beta")


def step_noise(seed, stream, step, shape, timesteps: int):
    """Standard normal noise for reverse step ``step`` (array position), stateless in ``(seed, stream, step)``.

    ``stream`` separates batches of one request; position ``timesteps`` is x_T itself.
    Chapter "Sampling", Eq. (9.2) (``eq-p-sample``).
    """
    counter = tf.cast(stream, tf.int64) * (timesteps + 1) + tf.cast(step, tf.int64)
    key = tf.stack([tf.cast(seed, tf.int64), counter])
    # Not tf.random.stateless_normal: under XLA it makes other numbers from the same key than the
    # plain kernel does, so samples would change with jit_compile. Random integers agree in both;
    # (k + 1/2) / 2^23 makes them uniform on (0, 1) (exact in float32, never 0 or 1), and the
    # inverse normal CDF makes those normal: the same noise with and without XLA, up to rounding.
    bits = tf.random.stateless_uniform(shape, seed=key, minval=0, maxval=2**23, dtype=tf.int32,
                                       alg="philox")
    return tf.math.ndtri((tf.cast(bits, tf.float32) + 0.5) / 2.0**23)


def p_mean_variance(schedule, predict_noise, x, t, labels=None, *, clip_x0: bool = True,
                    variance: str = "beta_tilde"):
    """Mean and variance of p_theta(x_{t-1} | x_t); returns ``(mean, variance, x0_hat, eps)``.

    The network predicts the noise; Eq. (2.19) (``eq-x0-from-eps``) turns it into a guess of x_0,
    clipped to [-1, 1] when ``clip_x0`` (Eq. (9.1) (``eq-x0-hat``)); the mean is the posterior mean
    of q(x_{t-1} | x_t, x_0) at that guess (Eq. (2.9) (``eq-posterior-mean``)). ``variance`` is
    ``"beta_tilde"`` (the posterior variance, Eq. (2.8) (``eq-posterior-variance``)) or ``"beta"``.
    Chapter "Sampling".
    """
    eps = predict_noise(x, t, labels)
    # Eq. (2.19) (``eq-x0-from-eps``)
    x0_hat = predict_x0_from_noise(schedule, x, t, eps)
    if clip_x0:
        # Eq. (9.1) (``eq-x0-hat``)
        x0_hat = tf.clip_by_value(x0_hat, -1.0, 1.0)
    # Eq. (2.9) (``eq-posterior-mean``)
    mean, beta_tilde, _ = q_posterior(schedule, x0_hat, x, t)
    if variance == "beta_tilde":
        var = beta_tilde
    else:
        var = schedule.gather("betas", t, ndim=x.shape.rank)
    return mean, var, x0_hat, eps


def p_sample(
    schedule,
    predict_noise,
    x,
    t,
    noise,
    labels=None,
    *,
    clip_x0: bool = True,
    variance: str = "beta_tilde",
):
    """One ancestral step x_t -> x_{t-1} = mean + sqrt(variance) z; no noise at the paper's t = 1.

    ``t`` is int32 (B,), all equal; ``noise`` is z, standard normal like ``x``.
    Chapter "Sampling", Eq. (9.2) (``eq-p-sample``).
    """
    mean, var, _, _ = p_mean_variance(
        schedule,
        predict_noise,
        x,
        t,
        labels,
        clip_x0=clip_x0,
        variance=variance,
    )
    not_last = tf.reshape(
        tf.cast(t > 0, tf.float32), [-1] + [1] * (x.shape.rank - 1)
    )
    # Eq. (9.2) (``eq-p-sample``)
    return mean + not_last * tf.sqrt(var) * noise


def ddpm_steps(
    schedule,
    predict_noise,
    x,
    start,
    stop,
    seed,
    stream,
    labels=None,
    *,
    clip_x0: bool = True,
    variance: str = "beta_tilde",
):
    """Algorithm 2 of DDPM from array position ``start - 1`` down to ``stop`` (the paper's t = start .. stop + 1).

    Inside a ``tf.function``, ``for i in tf.range(...)`` becomes one graph while-loop.
    Chapter "Sampling", Eq. (9.2) (``eq-p-sample``).
    """
    T = schedule.timesteps
    for i in tf.range(start - 1, stop - 1, -1):
        t = tf.fill(
            [tf.shape(x)[0]], i
        )  # every image of the batch is at step i
        z = step_noise(seed, stream, i, tf.shape(x), T)
        x_prev = p_sample(
            schedule,
            predict_noise,
            x,
            t,
            z,
            labels,
            clip_x0=clip_x0,
            variance=variance,
        )
        x = tf.ensure_shape(x_prev, x.shape)
    return x


def ddpm_sample_loop(schedule, predict_noise, shape, seed=0, labels=None):
    """Algorithm 2 of Ho et al. (2020), step by step: x_T ~ N(0, I), then x_{t-1} from x_t by
    Eq. (9.2) (``eq-p-sample``) for t = T, ..., 1; returns x_0.

    Readable, not fast: one eager network call per step. :func:`ddpm_steps` runs the same steps
    inside one ``tf.function`` (:func:`ddpm_helpers.engine.sampling.ddpm_sample` compiles it and
    runs it in chunks); a test checks both give the same images, noise for noise.
    """
    T = schedule.timesteps
    x = step_noise(seed, 0, T, shape, T)  # 1: x_T ~ N(0, I)
    for i in reversed(range(T)):  # 2: for t = T, ..., 1 (position i = t - 1)
        t = tf.fill([shape[0]], i)
        z = step_noise(seed, 0, i, shape, T)  # 3: z ~ N(0, I), unused at t = 1
        x = p_sample(schedule, predict_noise, x, t, z, labels)  # 4: x_{t-1}
    return x  # 6: return x_0


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """DDIM's noise scale: eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_prev).

    With eta = 1 and consecutive steps it is sqrt(beta_tilde_t).
    Chapter "Sampling", Eq. (9.6) (``eq-ddim-sigma``).
    """
    return (eta * tf.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t))
            * tf.sqrt(1.0 - alpha_bar_t / alpha_bar_prev))


def ddim_step(
    schedule,
    predict_noise,
    x,
    t,
    alpha_bar_prev,
    eta,
    noise,
    labels=None,
    *,
    clip_x0: bool = True,
):
    """One DDIM step from array position ``t`` to the earlier time whose alpha_bar is ``alpha_bar_prev``.

    x_prev = sqrt(alpha_bar_prev) x0_hat + sqrt(1 - alpha_bar_prev - sigma^2) eps + sigma z;
    ``alpha_bar_prev`` = 1 on the last step gives x0_hat. When x0_hat is clipped, eps is
    recomputed from it so that both terms agree. Chapter "Sampling", Eq. (9.5) (``eq-ddim-step``).
    """
    eps = predict_noise(x, t, labels)
    # Eq. (2.19) (``eq-x0-from-eps``)
    x0_hat = predict_x0_from_noise(schedule, x, t, eps)
    if clip_x0:
        x0_hat = tf.clip_by_value(x0_hat, -1.0, 1.0)
        eps = predict_noise_from_x0(schedule, x, t, x0_hat)
    alpha_bar_t = schedule.gather("alpha_bars", t, ndim=x.shape.rank)
    # Eq. (9.6) (``eq-ddim-sigma``)
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    direction = tf.sqrt(tf.maximum(1.0 - alpha_bar_prev - sigma**2, 0.0)) * eps
    return (
        tf.sqrt(alpha_bar_prev) * x0_hat + direction + sigma * noise
    )  # Eq. (9.5) (``eq-ddim-step``)


def ddim_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """The S array positions DDIM visits, increasing, evenly spaced from 0 to T - 1 (both included).

    Chapter "Sampling", Eq. (9.5) (``eq-ddim-step``).
    """
    if (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
            or not 1 <= steps <= timesteps):
        raise ValueError(
            f"DDIM steps must be an integer between 1 and T = {timesteps}, got {steps!r}; e.g. steps=50."
        )
    if steps == 1:
        return np.array([timesteps - 1], dtype=np.int32)
    return np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int32)


def ddim_steps(schedule, predict_noise, x, taus, start, stop, eta, seed, stream, labels=None, *,
               clip_x0: bool = True):
    """DDIM for k = start - 1, ..., stop: from position ``taus[k]`` to ``taus[k - 1]`` (to x_0 when k = 0).

    ``taus`` holds the S positions visited, increasing (:func:`ddim_timesteps`).
    Chapter "Sampling", Eq. (9.5) (``eq-ddim-step``).
    """
    T = schedule.timesteps
    for k in tf.range(start - 1, stop - 1, -1):
        t = tf.fill([tf.shape(x)[0]], taus[k])
        t_prev = tf.fill([tf.shape(x)[0]], taus[tf.maximum(k - 1, 0)])
        alpha_bar_prev = tf.where(k > 0, schedule.gather("alpha_bars", t_prev, ndim=x.shape.rank),
                                  1.0)  # x_0 after the last step
        z = step_noise(seed, stream, taus[k], tf.shape(x), T)
        x_prev = ddim_step(schedule, predict_noise, x, t, alpha_bar_prev, eta, z, labels,
                           clip_x0=clip_x0)
        x = tf.ensure_shape(x_prev, x.shape)
    return x
