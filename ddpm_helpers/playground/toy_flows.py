"""Training a 2-D velocity network by flow matching (chapter "Four targets and the flow view",
``sec-targets``), beside :func:`ddpm_helpers.playground.toy_training.train_toy` for the noise.

The network is the 2-D chapter's MLP (:func:`ddpm_helpers.playground.toy2d.build_mlp_denoiser`)
with the same integer time input: level k stands for r = (k + 1) / ``time_levels``
(:func:`ddpm_helpers.method.flows.time_index`). Each step draws r and the noise, builds
z_r = (1 - r) x_0 + r eps and fits the velocity eps - x_0 (Eq. (14.6) (``eq-fm-loss``)).
"""

from __future__ import annotations

import numpy as np

from ddpm_helpers.engine.flow_training import train_flow
from ddpm_helpers.playground.toy2d import build_mlp_denoiser
from ddpm_helpers.playground.toy_training import ToyRun


def train_flow_toy(data, *, steps: int, batch_size: int = 512, learning_rate: float = 1e-2,
                   ema_decay: float = 0.995, time_levels: int = 1000, seed: int = 0,
                   path=None, noise=None, progress: bool = True) -> ToyRun:
    """Fit u_theta(z_r, r) to the velocity of ``path`` (default: the straight line,
    :func:`ddpm_helpers.method.flows.straight_path`) on the points ``data`` (N, 2), with
    :func:`ddpm_helpers.engine.flow_training.train_flow`.

    ``noise`` (N, 2), if given, is the noise paired with each data point (for reflow: the noise
    a sample came from); by default every step draws fresh noise. Returns the last and the EMA
    weights as a :class:`~ddpm_helpers.playground.toy_training.ToyRun` (``schedule`` is None).
    """
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"data must be points of shape (N, D), got {data.shape}.")
    run = train_flow(
        data, lambda: build_mlp_denoiser(data_dim=data.shape[1], name="mlp_velocity"),
        steps=steps, batch_size=batch_size, learning_rate=learning_rate, ema_decay=ema_decay,
        time_levels=time_levels, seed=seed, path=path, noise=noise, progress=progress)
    return ToyRun(model=run.model, ema_model=run.ema_model, schedule=None, history=run.history,
                  seconds=run.seconds, steps=run.steps, data=data, ema=run.ema)
