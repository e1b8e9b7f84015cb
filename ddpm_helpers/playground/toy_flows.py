"""Training a 2-D velocity network by flow matching (chapter "Four targets and the flow view",
``sec-targets``), beside :func:`ddpm_helpers.playground.toy_training.train_toy` for the noise.

The network is the 2-D chapter's MLP (:func:`ddpm_helpers.playground.toy2d.build_mlp_denoiser`)
with the same integer time input: level k stands for r = (k + 1) / ``time_levels``
(:func:`ddpm_helpers.method.flows.time_index`). Each step draws r and the noise, builds
z_r = (1 - r) x_0 + r eps and fits the velocity eps - x_0 (Eq. (14.6) (``eq-fm-loss``)).
"""

from __future__ import annotations

import time

import numpy as np

from ddpm_helpers.playground.toy2d import build_mlp_denoiser
from ddpm_helpers.playground.toy_training import ToyRun


def train_flow_toy(data, *, steps: int, batch_size: int = 512, learning_rate: float = 1e-2,
                   ema_decay: float = 0.995, time_levels: int = 1000, seed: int = 0,
                   path=None, noise=None, progress: bool = True) -> ToyRun:
    """Fit u_theta(z_r, r) to the velocity of ``path`` (default: the straight line,
    :func:`ddpm_helpers.method.flows.straight_path`) on the points ``data`` (N, 2).

    ``noise`` (N, 2), if given, is the noise paired with each data point (for reflow: the noise
    a sample came from); by default every step draws fresh noise. Returns the last and the EMA
    weights as a :class:`~ddpm_helpers.playground.toy_training.ToyRun` (``schedule`` is None).
    """
    import keras
    import tensorflow as tf

    from ddpm_helpers.engine.learning_rates import ExponentialMovingAverage, make_learning_rate
    from ddpm_helpers.method.flows import flow_matching_loss, straight_path
    from ddpm_helpers.notebook.pages import ProgressBar

    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(f"data must be points of shape (N, D), got {data.shape}.")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float32)
        if noise.shape != data.shape:
            raise ValueError(f"noise must pair one draw with each point: shape {data.shape}, "
                             f"got {noise.shape}.")
    path = path or straight_path
    keras.utils.set_random_seed(seed)
    model = build_mlp_denoiser(data_dim=data.shape[1], name="mlp_velocity")
    ema_model = build_mlp_denoiser(data_dim=data.shape[1], name="mlp_velocity")
    ema = ExponentialMovingAverage(model, ema_model, ema_decay)
    ema.reset()
    optimizer = keras.optimizers.Adam(make_learning_rate("cosine", learning_rate, steps))

    @tf.function
    def train_step(x0, noise, k):
        r = tf.reshape(tf.cast(k + 1, tf.float32) / time_levels, [-1, 1])
        with tf.GradientTape() as tape:
            loss = flow_matching_loss(lambda z, t: model([z, t], training=True), x0, noise, r, k,
                                      path=path)
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_weights),
                                      model.trainable_weights))
        ema.update()
        return loss

    rng = np.random.default_rng(seed)
    bar = ProgressBar(steps, unit="step", enabled=progress, stateful_metrics=["loss"])
    history = {"step": [], "loss": []}
    began = time.perf_counter()
    for step in range(steps):
        index = rng.integers(0, len(data), batch_size)
        x0 = data[index]
        eps = (rng.standard_normal(x0.shape).astype(np.float32) if noise is None
               else noise[index])
        k = rng.integers(0, time_levels, batch_size).astype(np.int32)
        loss = float(train_step(tf.constant(x0), tf.constant(eps), tf.constant(k)))
        if not np.isfinite(loss):
            raise FloatingPointError(f"The flow-matching loss became {loss} at step {step + 1}; "
                                     "lower the learning rate or change the seed.")
        history["step"].append(step + 1)
        history["loss"].append(loss)
        bar.update(step + 1, [("loss", loss)], finalize=step + 1 == steps)
    return ToyRun(model=model, ema_model=ema_model, schedule=None, history=history,
                  seconds=time.perf_counter() - began, steps=int(steps), data=data, ema=ema)
