"""Training a velocity network by flow matching (chapters "Four targets and the flow view" and
"Sampling past Euler").

:func:`train_flow` fits any Keras network ``model([z, k])`` (the 2-D MLP, the book's U-Net) to the
velocity of a path from data to noise, Eq. (14.6) (``eq-fm-loss``). Its integer time input k
stands for r = (k + 1) / ``time_levels`` (:func:`ddpm_helpers.method.flows.time_index`), as the
U-Net's t stands for a noise level of its schedule.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np


@dataclasses.dataclass
class FlowRun:
    """A trained velocity network: last weights (``model``), their EMA (``ema_model``, for
    sampling), the loss of every step and the seconds the steps took."""

    model: object
    ema_model: object
    history: dict
    seconds: float
    steps: int
    ema: object = None


def train_flow(data, build_model, *, steps: int, batch_size: int, learning_rate: float,
               ema_decay: float, time_levels: int = 1000, seed: int = 0, path=None, noise=None,
               initial_weights=None, progress: bool = True) -> FlowRun:
    """Fit ``build_model()`` to the velocity of ``path`` on the examples ``data`` (N, ...).

    ``path(x0, noise, r) -> (z_r, velocity)`` is the straight line of Eq. (14.5) (``eq-rf-path``)
    by default. ``noise`` (the shape of ``data``), if given, pairs one noise draw with each example
    (reflow); by default every step draws fresh noise. ``initial_weights`` (a list, as from
    ``get_weights()``) starts the network, and its average, from those weights instead of fresh
    ones. Adam with a cosine decay of ``learning_rate`` to 0; the EMA of the weights has decay
    ``ema_decay``. A non-finite loss stops training with a ``FloatingPointError``.
    """
    import keras
    import tensorflow as tf

    from ddpm_helpers.engine.learning_rates import ExponentialMovingAverage, make_learning_rate
    from ddpm_helpers.method.flows import flow_matching_loss, straight_path
    from ddpm_helpers.notebook.pages import ProgressBar

    data = np.asarray(data, dtype=np.float32)
    if data.ndim < 2:
        raise ValueError(f"data must hold examples along its first axis, got shape {data.shape}.")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float32)
        if noise.shape != data.shape:
            raise ValueError(f"noise must pair one draw with each example: shape {data.shape}, "
                             f"got {noise.shape}.")
    path = path or straight_path
    keras.utils.set_random_seed(seed)
    model, ema_model = build_model(), build_model()
    if initial_weights is not None:
        model.set_weights(initial_weights)
    ema = ExponentialMovingAverage(model, ema_model, ema_decay)
    ema.reset()
    optimizer = keras.optimizers.Adam(make_learning_rate("cosine", learning_rate, steps))
    r_shape = (-1,) + (1,) * (data.ndim - 1)

    @tf.function
    def train_step(x0, noise, k):
        r = tf.reshape(tf.cast(k + 1, tf.float32) / time_levels, r_shape)
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
    return FlowRun(model=model, ema_model=ema_model, history=history,
                   seconds=time.perf_counter() - began, steps=int(steps), ema=ema)
