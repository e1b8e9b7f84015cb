"""Training the 2-D denoiser (chapter "Diffusion in two dimensions", ``sec-diffusion-2d``).

- :func:`toy_settings`: the sizes of the 2-D experiments for a profile;
- :func:`train_toy`: the training loop around
  :func:`ddpm_helpers.engine.train_step.make_train_step`, with the EMA of the weights that sampling
  uses.

Both are also importable from :mod:`ddpm_helpers.playground.toy2d`.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from ddpm_helpers.playground.toy2d import build_mlp_denoiser

# --------------------------------------------------------------------------------------------
# Sizes and training
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ToySettings:
    """Sizes of the 2-D experiments (chosen per profile by :func:`toy_settings`)."""

    dataset: str
    train_points: int
    train_steps: int
    batch_size: int
    learning_rate: float
    hidden: int
    depth: int
    time_embedding_dim: int
    ema_decay: float
    num_samples: int
    exercise_steps: int  # training steps of each exercise variant in "Your turn"
    exercise_samples: int
    frames: int  # snapshots of the reverse process kept for the trajectories and the animation
    seed: int = 0

    def replace(self, **changes) -> "ToySettings":
        """A copy with the fields ``changes`` names changed."""
        return dataclasses.replace(self, **changes)


TOY_SETTINGS = {
    "smoke": ToySettings(dataset="two_moons", train_points=2_000, train_steps=60, batch_size=128,
                         learning_rate=3e-3, hidden=32, depth=1, time_embedding_dim=16, ema_decay=0.9,
                         num_samples=200, exercise_steps=30, exercise_samples=200, frames=11),
    "default": ToySettings(dataset="two_moons", train_points=20_000, train_steps=3_000, batch_size=512,
                           learning_rate=1e-2, hidden=64, depth=3, time_embedding_dim=64, ema_decay=0.995,
                           num_samples=2_000, exercise_steps=700, exercise_samples=2_000, frames=61),
}


def toy_settings(profile) -> ToySettings:
    """The 2-D sizes for a profile (by name; profiles other than ``smoke`` use ``default``'s)."""
    name = getattr(profile, "name", profile)
    settings = TOY_SETTINGS.get(name, TOY_SETTINGS["default"])
    return settings.replace(seed=int(getattr(profile, "seed", 0)))


@dataclasses.dataclass
class ToyRun:
    """A trained 2-D denoiser: last weights (``model``), their EMA (``ema_model``, for sampling).

    ``ema`` is the object whose ``update()`` the training step called (an
    :class:`~ddpm_helpers.engine.learning_rates.ExponentialMovingAverage`, or what ``make_ema``
    returned).
    """

    model: object
    ema_model: object
    schedule: object
    history: dict
    seconds: float
    steps: int
    data: np.ndarray
    ema: object = None

    def __repr__(self) -> str:
        return f"ToyRun({self.steps} steps in {self.seconds:.1f} s, final running loss {self.history['running_loss'][-1]:.4f})"


def _stop_if_not_finite(train_step, loss: float, step: int, steps: int):
    if not math.isfinite(loss) or int(train_step.bad_step):
        what = "the loss" if int(train_step.bad_what) == 1 else "a gradient"
        raise FloatingPointError(
            f"Training stopped: {what} became NaN or infinite at step {step} of {steps}, and no update "
            "was applied from it on. Lower the learning rate or change the seed.")


def train_toy(
    data,
    schedule,
    *,
    steps: int,
    batch_size: int = 256,
    learning_rate: float = 3e-3,
    loss: str = "mse",
    ema_decay: float = 0.995,
    seed: int = 0,
    build_model=None,
    lr_schedule: str = "cosine",
    make_ema=None,
    progress: bool = True,
    loss_fn=None,
    labels=None,
    num_classes: int | None = None,
    label_dropout: float = 0.0,
) -> ToyRun:
    """Train a 2-D denoiser on the points ``data`` (N, 2) with the book's training step.

    Each step draws a batch of points at random (seeded by ``seed``) and calls the step of
    :func:`ddpm_helpers.engine.train_step.make_train_step`: t and the noise, ``q_sample``, the loss
    (``loss``: ``"mse"`` or ``"huber"``, or any ``loss_fn(noise, predicted)``), Adam with the
    ``lr_schedule`` of :func:`ddpm_helpers.engine.learning_rates.make_learning_rate`, the EMA
    update. ``build_model()`` returns a fresh Keras model (default: :func:`.build_mlp_denoiser`); it
    is called twice, for the trained and the EMA weights. ``make_ema(model, ema_model)`` replaces
    the default :class:`~ddpm_helpers.engine.learning_rates.ExponentialMovingAverage` (decay
    ``ema_decay``) by any object with an ``update()`` method that the step calls (e.g. several
    averages at once); it should keep an average in ``ema_model``, which the result returns as its
    ``ema_model``. With ``labels`` (N,) and ``num_classes`` the model is class-conditional and
    labels are dropped to the null label with probability ``label_dropout``.
    """
    import keras
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import diffusion_loss
    from ddpm_helpers.notebook.pages import ProgressBar
    from ddpm_helpers.engine.training import (
        RUNNING_LOSS_DECAY,
        ExponentialMovingAverage,
        make_learning_rate,
        make_train_step,
    )

    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2:
        raise ValueError(
            f"data must be points of shape (N, D), got {data.shape}."
        )
    if (
        isinstance(steps, bool)
        or not isinstance(steps, (int, np.integer))
        or steps < 1
    ):
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int32)
        if labels.shape != (len(data),):
            raise ValueError(
                f"labels must have shape ({len(data)},), got {labels.shape}."
            )
        if not num_classes:
            raise ValueError(
                "labels need num_classes (the number of classes; num_classes is the null label)."
            )
    elif num_classes:
        raise ValueError(
            "A conditional model (num_classes) needs labels for the data."
        )
    if build_model is None:

        def build_model():
            return build_mlp_denoiser(
                data_dim=data.shape[1], num_classes=num_classes
            )

    keras.utils.set_random_seed(seed)
    model, ema_model = build_model(), build_model()
    if make_ema is None:
        ema = ExponentialMovingAverage(model, ema_model, ema_decay)
        ema.reset()
    else:
        ema = make_ema(model, ema_model)
    optimizer = keras.optimizers.Adam(
        make_learning_rate(lr_schedule, learning_rate, steps)
    )
    loss_fn = loss_fn or diffusion_loss(loss)
    train_step = make_train_step(
        model,
        optimizer,
        schedule,
        loss_fn,
        ema=ema,
        seed=seed,
        num_classes=num_classes,
        label_dropout=label_dropout,
    )
    rng = np.random.default_rng(seed)
    bar = ProgressBar(
        steps, unit="step", enabled=progress, stateful_metrics=["loss"]
    )
    history = {"step": [], "loss": [], "running_loss": []}
    running = None
    no_labels = tf.zeros([batch_size], tf.int32)
    began = time.perf_counter()
    for step in range(steps):
        index = rng.integers(0, len(data), batch_size)
        batch_labels = (
            no_labels if labels is None else tf.constant(labels[index])
        )
        value = float(
            train_step(
                tf.constant(data[index]),
                batch_labels,
                tf.constant(step, tf.int64),
            )
        )
        _stop_if_not_finite(train_step, value, step + 1, steps)
        running = value if running is None else (
            RUNNING_LOSS_DECAY * running + (1 - RUNNING_LOSS_DECAY) * value
        )
        history["step"].append(step + 1)
        history["loss"].append(value)
        history["running_loss"].append(running)
        bar.update(step + 1, [("loss", running)], finalize=step + 1 == steps)
    return ToyRun(
        model=model,
        ema_model=ema_model,
        schedule=schedule,
        history=history,
        seconds=time.perf_counter() - began,
        steps=int(steps),
        data=data,
        ema=ema,
    )
