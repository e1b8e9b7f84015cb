"""Flow matching on the straight path from data to noise (chapter "Four targets and the flow view",
``sec-targets``).

Rectified flow (Liu et al. 2023) and flow matching (Lipman et al. 2023) join a data point and a
noise draw by a straight line and train a network to predict its velocity:

    z_r = (1 - r) x_0 + r eps,      u = dz_r / dr = eps - x_0       Eq. (14.5) (``eq-rf-path``)

    L_FM = E ||u_theta(z_r, r) - (eps - x_0)||^2                     Eq. (14.6) (``eq-fm-loss``)

Sampling integrates dz/dr = u_theta(z, r) from r = 1 (noise) to r = 0. The DDPM path is the same
path, rescaled: ``x_t / (alpha_t + sigma_t)`` lies on it at ``r = sigma_t / (alpha_t + sigma_t)``
(Eq. (14.7) (``eq-vp-to-rf``), :func:`rf_time`), so the solvers of
:mod:`ddpm_helpers.method.solvers`, written for the noise level sigma = r / (1 - r), sample a flow
model too (:func:`denoiser_from_velocity`).
"""

from __future__ import annotations

import math

import numpy as np


def interpolate(x0, noise, r):
    """The point z_r = (1 - r) x_0 + r eps of Eq. (14.5) (``eq-rf-path``); ``r`` broadcasts."""
    return (1.0 - r) * x0 + r * noise


def straight_path(x0, noise, r):
    """The point z_r and the velocity eps - x_0 of Eq. (14.5) (``eq-rf-path``)."""
    return interpolate(x0, noise, r), noise - x0


def flow_matching_loss(predict_velocity, x0, noise, r, t, path=straight_path):
    """Eq. (14.6) (``eq-fm-loss``): the mean squared error of the predicted velocity at z_r.

    ``r`` (B, 1, ...) is the time in [0, 1] that builds z_r; ``t`` (B,) is the same time as the
    integer input of the network (:func:`time_index`). ``path(x0, noise, r) -> (z_r, velocity)``
    is the straight line by default; any other path between data and noise works the same way.
    """
    import tensorflow as tf

    z, velocity = path(x0, noise, r)
    return tf.reduce_mean((predict_velocity(z, t) - velocity) ** 2)


def time_index(r, steps: int):
    """The network's integer time input for r in (0, 1]: r = (k + 1) / steps, like DDPM's t = k + 1
    of T (:mod:`ddpm_helpers.method.schedules`)."""
    return np.clip(np.rint(np.asarray(r) * steps) - 1, 0, steps - 1).astype(np.int32)


def rf_time(alpha, sigma):
    """r = sigma / (alpha + sigma): where x_t / (alpha + sigma) meets the straight path,
    Eq. (14.7) (``eq-vp-to-rf``)."""
    return sigma / (alpha + sigma)


def denoiser_from_velocity(predict_velocity, steps: int, *, x0_limit: float | None = None):
    """``denoise(y, sigma)`` for a velocity network on ``steps`` time levels, for the solvers of
    :mod:`ddpm_helpers.method.solvers`: r = sigma / (1 + sigma), z = (1 - r) y and
    x_0 = z - r u (Eq. (14.5) (``eq-rf-path``) solved for x_0), clipped to [-x0_limit, x0_limit] unless None.
    ``sigma`` must be one of :func:`flow_sigmas`."""
    import tensorflow as tf

    def denoise(y, sigma):
        sigma = float(sigma)
        r = sigma / (1.0 + sigma)
        k = int(time_index(r, steps))
        if not math.isclose((k + 1) / steps, r, rel_tol=1e-6):
            raise ValueError(f"sigma = {sigma:g} is not one of the model's time levels; "
                             "use flow_sigmas(steps, wanted).")
        z = (1.0 - r) * y
        x0 = z - r * predict_velocity(z, tf.fill([tf.shape(y)[0]], k))
        if x0_limit is None:
            return x0
        return tf.clip_by_value(x0, -x0_limit, x0_limit)

    return denoise


def flow_sigmas(steps: int, wanted=None) -> np.ndarray:
    """The noise levels sigma = r / (1 - r) of a flow model's times r = (k + 1) / steps below 1
    (all of them, increasing), or those nearest (in log sigma) to ``wanted``, in its order."""
    r = np.arange(1, steps) / steps
    table = r / (1.0 - r)
    if wanted is None:
        return table
    index = np.abs(np.log(table)[None, :] - np.log(np.asarray(wanted))[:, None]).argmin(1)
    keep = np.concatenate([[True], index[1:] != index[:-1]])
    return table[index[keep]]
