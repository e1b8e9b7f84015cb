"""The forward process, its posterior and the training loss (float32, TensorFlow).

Chapter "Forward and reverse process" (``sec-forward-reverse``). Every function takes the
:class:`~ddpm_helpers.method.schedules.NoiseSchedule` first, then tensors ``x`` of shape (B, H, W, C) or
(B, D) and an integer time index ``t`` of shape (B,) with ``0 <= t < T`` (index ``t`` is the
paper's step t + 1, see :mod:`ddpm_helpers.method.schedules`). All of them work eagerly and inside
``tf.function``.
"""

from __future__ import annotations

import tensorflow as tf

LOSS_NAMES = ("huber", "mse")


def _as_float(x):
    x = tf.convert_to_tensor(x)
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def at(schedule, name, t, x):
    """The schedule's table ``name`` (e.g. ``"sqrt_alpha_bars"``) at time indices ``t``, shaped
    (B, 1, ...) to multiply ``x`` of shape (B, ...)."""
    rank = x.shape.rank
    if rank is None or rank < 1:
        raise ValueError(f"x must be a batch of shape (B, ...), got a tensor of rank {rank}.")
    return schedule.gather(name, t, ndim=rank)


def q_sample(schedule, x0, t, noise):
    """Sample x_t ~ q(x_t | x_0) in closed form: sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise.

    ``noise`` is standard normal with the shape of ``x0``. Chapter "Forward and reverse process",
    Eq. (2.5) (``eq-q-xt-x0``).
    """
    x0, noise = _as_float(x0), _as_float(noise)
    sqrt_alpha_bar = at(schedule, "sqrt_alpha_bars", t, x0)
    sqrt_one_minus_alpha_bar = at(schedule, "sqrt_one_minus_alpha_bars", t, x0)
    return sqrt_alpha_bar * x0 + sqrt_one_minus_alpha_bar * noise


def q_step(schedule, x_prev, t, noise):
    """One forward step x_t ~ q(x_t | x_{t-1}): sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise.

    Chapter "Forward and reverse process", Eq. (2.2) (``eq-forward-step``).
    """
    x_prev, noise = _as_float(x_prev), _as_float(noise)
    sqrt_alpha = at(schedule, "sqrt_alphas", t, x_prev)
    sqrt_beta = at(schedule, "sqrt_betas", t, x_prev)
    return sqrt_alpha * x_prev + sqrt_beta * noise


def predict_x0_from_noise(schedule, x_t, t, noise):
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) noise) / sqrt(alpha_bar_t).

    Inverts :func:`q_sample` for a (predicted) noise. Written as the equation reads, not as
    sqrt(1/alpha_bar) x_t - sqrt(1/alpha_bar - 1) noise: at the cosine schedule's last step
    (alpha_bar = 2.4e-9) that form loses up to 6e-3 in float32, this one about 1e-4 (see
    ``tests/test_diffusion.py``). Chapter "Forward and reverse process", Eq. (2.19)
    (``eq-x0-from-eps``).
    """
    x_t, noise = _as_float(x_t), _as_float(noise)
    sqrt_alpha_bar = at(schedule, "sqrt_alpha_bars", t, x_t)
    sqrt_one_minus_alpha_bar = at(schedule, "sqrt_one_minus_alpha_bars", t, x_t)
    return (x_t - sqrt_one_minus_alpha_bar * noise) / sqrt_alpha_bar


def predict_noise_from_x0(schedule, x_t, t, x0):
    """noise = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t).

    Chapter "Forward and reverse process", Eq. (2.19) (``eq-x0-from-eps``) solved for the noise.
    """
    x_t, x0 = _as_float(x_t), _as_float(x0)
    sqrt_alpha_bar = at(schedule, "sqrt_alpha_bars", t, x_t)
    sqrt_one_minus_alpha_bar = at(schedule, "sqrt_one_minus_alpha_bars", t, x_t)
    return (x_t - sqrt_alpha_bar * x0) / sqrt_one_minus_alpha_bar


def velocity(schedule, x0, t, noise):
    """The v-prediction target of Salimans & Ho (2022): v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0.

    Chapter "Forward and reverse process", Eq. (2.25) (``eq-velocity``) (exercise).
    """
    x0, noise = _as_float(x0), _as_float(noise)
    return at(schedule, "sqrt_alpha_bars", t, x0) * noise - at(schedule, "sqrt_one_minus_alpha_bars", t, x0) * x0


def predict_x0_from_velocity(schedule, x_t, t, v):
    """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v. Chapter "Forward and reverse process",
    Eq. (2.25) (``eq-velocity``)."""
    x_t, v = _as_float(x_t), _as_float(v)
    return at(schedule, "sqrt_alpha_bars", t, x_t) * x_t - at(schedule, "sqrt_one_minus_alpha_bars", t, x_t) * v


def predict_noise_from_velocity(schedule, x_t, t, v):
    """noise = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v. Chapter "Forward and reverse
    process", Eq. (2.25) (``eq-velocity``)."""
    x_t, v = _as_float(x_t), _as_float(v)
    return at(schedule, "sqrt_one_minus_alpha_bars", t, x_t) * x_t + at(schedule, "sqrt_alpha_bars", t, x_t) * v


def q_posterior(schedule, x0, x_t, t):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0).

    mean = coef1_t x_0 + coef2_t x_t with coef1_t = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t),
    coef2_t = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); variance = beta_tilde_t =
    beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t). The variance and log-variance have shape
    (B, 1, ...) and broadcast against x. Chapter "Forward and reverse process",
    Eqs. (2.9) (``eq-posterior-mean``) and (2.8) (``eq-posterior-variance``).
    """
    x0, x_t = _as_float(x0), _as_float(x_t)
    # coef1 = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)
    # coef2 = sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
    coef1 = at(schedule, "posterior_mean_coef1", t, x_t)
    coef2 = at(schedule, "posterior_mean_coef2", t, x_t)
    mean = coef1 * x0 + coef2 * x_t
    variance = at(schedule, "posterior_variance", t, x_t)  # beta_tilde_t
    log_variance = at(schedule, "posterior_log_variance_clipped", t, x_t)
    return mean, variance, log_variance


def diffusion_loss(name: str):
    """The training loss between the true and the predicted noise, as a Keras loss (a scalar mean).

    ``"mse"``: mean of (noise - predicted)^2, the simple loss of Ho et al. (chapter "Forward and
    reverse process", Eq. (2.24) (``eq-simple-loss``)). ``"huber"``: Keras' Huber loss with
    delta = 1, as the original CelebA tutorial (Eq. (3.8) (``eq-huber``)): 0.5 r^2 for
    ``|r| <= 1``, ``|r| - 0.5`` otherwise, averaged.
    """
    import keras

    if name == "mse":
        return keras.losses.MeanSquaredError(name="mse")
    if name == "huber":
        return keras.losses.Huber(delta=1.0, name="huber")
    raise ValueError(f"Unknown loss {name!r}. Valid losses: {', '.join(LOSS_NAMES)}.")


def gaussian_mixture_posterior(x_t, alpha_bar, means, stds, weights=None):
    """Exact denoising quantities when the data are a mixture of Gaussians (NumPy, float64).

    Data ``x_0 ~ sum_k weights[k] N(means[k], diag(stds[k]^2))``: ``means`` of shape (K, D);
    ``stds`` a number, (K,) (isotropic components) or (K, D) (one standard deviation per
    coordinate); ``weights`` (K,), default uniform. They are noised as in Eq. (2.5)
    (``eq-q-xt-x0``), ``x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps``, and the noised data
    are again a mixture (Eq. (6.2) (``eq-mixture-score``)). Returns a dict with, for every row of
    ``x_t`` (N, D) and ``alpha_bar`` in (0, 1] (a number or (N,)):

    - ``"log_density"``: log q(x_t), shape (N,);
    - ``"score"``: grad log q(x_t), (N, D);
    - ``"x0_mean"``, ``"x0_var"``: E[x_0 | x_t] and Var[x_0 | x_t] per coordinate, (N, D);
    - ``"eps_mean"``: E[eps | x_t], from x0_mean (0 where alpha_bar = 1); it equals
      -sqrt(1 - alpha_bar) score, Eq. (3.2) (``eq-eps-score``).

    Exact references for chapter "Forward and reverse process", Eqs. (3.1) (``eq-tweedie``),
    (3.2) (``eq-eps-score``) and (3.7) (``eq-best-eps-error``), and for the 2-D data sets
    (:mod:`ddpm_helpers.playground.toy_score`).
    """
    import numpy as np

    x = np.atleast_2d(np.asarray(x_t, dtype=np.float64))
    means = np.atleast_2d(np.asarray(means, dtype=np.float64))
    k, d = means.shape
    if d != x.shape[1]:
        raise ValueError(f"means have dimension {d} but x_t has {x.shape[1]}; "
                         "pass means of shape (K, D) for x_t of shape (N, D).")
    stds = np.asarray(stds, dtype=np.float64)
    if stds.shape not in ((), (k,), (k, d)):
        raise ValueError(f"stds must be a number, ({k},) or ({k}, {d}), got shape {stds.shape}.")
    s2 = np.broadcast_to((stds[:, None] if stds.ndim == 1 else stds) ** 2, (k, d))
    weights = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, np.float64)
    if weights.shape != (k,) or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"weights must be {k} non-negative numbers that sum to 1, got {weights}.")
    ab = np.broadcast_to(np.asarray(alpha_bar, dtype=np.float64).reshape(-1), (x.shape[0],))
    if np.any(ab <= 0) or np.any(ab > 1):
        raise ValueError("alpha_bar must lie in (0, 1] (e.g. schedule.alpha_bars[t]).")
    # A few rows at a time: the (rows, K, D) temporaries then stay in the CPU's cache (about twice
    # as fast for K = 1024 as all rows at once); each row's arithmetic is the same.
    rows = max(1, 2**16 // (k * d))
    parts = [mixture_posterior_rows(x[i:i + rows], ab[i:i + rows], means, s2, weights)
             for i in range(0, x.shape[0], rows)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def mixture_posterior_rows(x, ab, means, s2, weights):
    """The body of :func:`gaussian_mixture_posterior`, for the rows ``x`` (n, D) at ``ab`` (n,),
    with ``s2`` the components' variances (K, D): Eq. (6.2) (``eq-mixture-score``)."""
    import numpy as np

    ab = ab[:, None, None]  # (N, 1, 1) against (N, K, D)
    # q_t: component k has mean sqrt(ab) mu_k and variance ab s_k^2 + 1 - ab
    var = ab * s2 + 1.0 - ab  # (N, K, D)
    diff = x[:, None, :] - np.sqrt(ab) * means  # (N, K, D)
    log_comp = (np.log(np.where(weights > 0, weights, 1e-300))
                - 0.5 * np.sum(np.log(2 * np.pi * var) + diff**2 / var, axis=2))
    top = log_comp.max(axis=1, keepdims=True)
    log_density = top[:, 0] + np.log(np.exp(log_comp - top).sum(axis=1))
    resp = np.exp(log_comp - log_density[:, None])[:, :, None]  # r_k(x)
    score = np.sum(resp * (-diff / var), axis=1)  # grad log q_t(x)
    comp_mean = means + np.sqrt(ab) * s2 / var * diff  # E[x_0 | x_t, k]
    comp_var = s2 * (1.0 - ab) / var  # Var[x_0 | x_t, k] per coordinate
    x0_mean = np.sum(resp * comp_mean, axis=1)
    x0_var = np.sum(resp * (comp_var + comp_mean**2), axis=1) - x0_mean**2
    ab = ab[:, 0]
    noise_sd = np.sqrt(1.0 - ab)
    eps_mean = np.divide(x - np.sqrt(ab) * x0_mean, noise_sd,
                         out=np.zeros_like(x), where=noise_sd > 0)
    return {"log_density": log_density, "score": score, "x0_mean": x0_mean,
            "x0_var": np.maximum(x0_var, 0.0), "eps_mean": eps_mean}


def discrete_best_noise_error(levels, probs, alpha_bar, nodes: int = 801):
    """The best possible noise error per pixel when a pixel takes only the values ``levels``.

    Chapter "Scores, hard steps and the loss", Eq. (3.7) (``eq-best-eps-error``) for data whose
    pixels take the values ``levels`` (K,) with probabilities ``probs`` (K,), one pixel seen on
    its own: ``x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps``, the posterior over the K
    values is Bayes' rule, and the best error is ``SNR E[Var(x_0 | x_t)]`` with
    ``SNR = alpha_bar / (1 - alpha_bar)``. The average over ``x_t`` is a sum over the K values and
    ``nodes`` points of the noise in [-8, 8]. Returns an array shaped like ``alpha_bar``
    (0 where alpha_bar = 1). A denoiser that sees the whole image can only do better.
    """
    import numpy as np

    levels = np.asarray(levels, dtype=np.float64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if levels.shape != probs.shape or np.any(probs < 0) or not np.isclose(probs.sum(), 1):
        raise ValueError(f"probs must be {levels.size} non-negative numbers that sum to 1 (one "
                         f"per level), got {probs}; use np.unique(x, return_counts=True).")
    alpha_bar = np.asarray(alpha_bar, dtype=np.float64)
    if np.any(alpha_bar <= 0) or np.any(alpha_bar > 1):
        raise ValueError("alpha_bar must lie in (0, 1] (e.g. schedule.alpha_bars).")
    z = np.linspace(-8.0, 8.0, nodes)
    z_weights = np.exp(-0.5 * z**2) / np.exp(-0.5 * z**2).sum()
    log_prior = np.log(np.where(probs > 0, probs, 1e-300))
    errors = []
    for ab in alpha_bar.reshape(-1):
        if ab == 1:
            errors.append(0.0)
            continue
        a, s = np.sqrt(ab), np.sqrt(1 - ab)
        x_t = a * levels[:, None] + s * z  # (true level, noise point)
        # log q(x_0 = level k | x_t), up to a constant: (K, nodes, K)
        log_post = log_prior - (x_t[..., None] - a * levels) ** 2 / (2 * s * s)
        post = np.exp(log_post - log_post.max(axis=2, keepdims=True))
        post /= post.sum(axis=2, keepdims=True)
        mean = post @ levels
        var = np.maximum(post @ levels**2 - mean**2, 0.0)
        errors.append(ab / (1 - ab) * np.sum(probs[:, None] * z_weights * var))
    return np.asarray(errors).reshape(alpha_bar.shape)
