"""Adam's step size over training and the EMA of the weights (chapter "Training", ``sec-training``).

- :func:`seed_learning_rate`: the original CelebA tutorial's schedule, Eq. (8.2) (``eq-seed-lr``),
  which is Keras' ``InverseTimeDecay``; :func:`make_learning_rate` names it and the book's other
  schedules.
- :func:`learning_rates`: the rates a schedule gives a range of optimizer iterations (the loss
  curve's ``lr`` column).
- :class:`ExponentialMovingAverage`: the averaged weights that sampling uses, Eq. (8.3)
  (``eq-ema``).
"""

from __future__ import annotations

import numpy as np

LR_SCHEDULES = ("seed", "constant", "cosine", "warmup_cosine")
SEED_DECAY_STEPS = 100_000  # the original tutorial's: the rate halves after 100,000 steps


def _keras():
    import keras

    return keras


def seed_learning_rate(base_lr: float = 1e-4, decay_steps: int = SEED_DECAY_STEPS):
    """``lr(step) = base_lr * decay_steps / (step + decay_steps)``, chapter "Training", Eq. (8.2)
    (``eq-seed-lr``).

    That is ``keras.optimizers.schedules.InverseTimeDecay(base_lr, decay_steps, decay_rate=1)``,
    whose formula is ``base_lr / (1 + decay_rate * step / decay_steps)``. With the original
    tutorial's ``decay_steps = 100000`` the rate halves after 100,000 steps; over its 63,310
    steps it falls to 61% of ``base_lr``.
    """
    if not base_lr > 0 or not decay_steps > 0:
        raise ValueError(f"base_lr and decay_steps must be positive, got {base_lr} and {decay_steps}.")
    return _keras().optimizers.schedules.InverseTimeDecay(float(base_lr), float(decay_steps), 1.0)


# The name the Training chapter used before the schedule became Keras' own InverseTimeDecay.
SeedLearningRate = seed_learning_rate


class ConstantLearningRate(_keras().optimizers.schedules.LearningRateSchedule):
    """``lr(step) = base_lr`` for every step.

    A schedule rather than a float: Keras stores a float rate as an optimizer variable, which a
    checkpoint would restore over a rate changed on resume.
    """

    def __init__(self, base_lr: float):
        self.base_lr = float(base_lr)

    def __call__(self, step):
        import keras

        return keras.ops.cast(self.base_lr, "float32") + 0.0 * keras.ops.cast(step, "float32")

    def get_config(self):
        return {"base_lr": self.base_lr}


def make_learning_rate(name: str, base_lr: float, total_steps: int, decay_steps: int | None = None):
    """A Keras ``LearningRateSchedule`` by name.

    - ``"seed"``: :func:`seed_learning_rate` with ``decay_steps`` (default ``SEED_DECAY_STEPS``;
      :func:`scale_for_batch` gives the one for a larger batch); it does not depend on
      ``total_steps``,
    - ``"constant"``: ``base_lr`` throughout,
    - ``"cosine"``: cosine decay from ``base_lr`` to 0 over ``total_steps``,
    - ``"warmup_cosine"``: linear warm-up over the first 5% of the steps, then cosine decay to 0.

    Raises ``ValueError`` for any other name, and for ``decay_steps`` with a schedule other than
    ``"seed"`` (the others decay over ``total_steps``).
    """
    keras = _keras()
    if not base_lr > 0:
        raise ValueError(f"base_lr must be positive, got {base_lr}.")
    total_steps = int(total_steps)
    if decay_steps is not None and name != "seed":
        raise ValueError(f"decay_steps (--lr-decay-steps) belongs to the 'seed' schedule; the {name!r} schedule "
                         "decays over the run's steps. Leave decay_steps out, or use lr_schedule='seed'.")
    if name == "seed":
        return seed_learning_rate(base_lr, SEED_DECAY_STEPS if decay_steps is None else decay_steps)
    if name == "constant":
        return ConstantLearningRate(base_lr)
    if name not in LR_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {name!r}. Valid: {', '.join(LR_SCHEDULES)}.")
    if total_steps < 1:
        raise ValueError(f"The {name!r} schedule needs total_steps >= 1, got {total_steps}.")
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=total_steps, alpha=0.0)
    warmup = max(1, total_steps // 20)
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total_steps - warmup), alpha=0.0, warmup_target=base_lr, warmup_steps=warmup
    )


def learning_rates(schedule, first: int, last: int) -> np.ndarray:
    """The rates a Keras ``LearningRateSchedule`` gives the optimizer's iterations ``first .. last - 1``."""
    import tensorflow as tf

    if last <= first:
        return np.zeros(0)
    steps = tf.range(first, last, dtype=tf.int64)
    try:  # most schedules are element-wise formulas
        rates = np.asarray(schedule(steps), dtype=np.float64).reshape(-1)
        if rates.shape == (last - first,):
            return rates
    except Exception:  # e.g. a schedule with a tf.cond on the step
        pass
    one_by_one = tf.function(lambda s: tf.map_fn(lambda x: tf.cast(schedule(x), tf.float32), s,
                                                 fn_output_signature=tf.float32))
    return np.asarray(one_by_one(steps), dtype=np.float64)


class ExponentialMovingAverage:
    """Keeps ``ema_model``'s weights an exponential moving average of ``model``'s.

    After every optimizer step, for each trainable weight: ``ema <- decay * ema + (1 - decay) * w``
    (chapter "Training", Eq. (8.3) (``eq-ema``)); weights that are not trained are copied.
    ``ema_model`` must have the same architecture; :meth:`reset` copies the current weights into it.
    """

    def __init__(self, model, ema_model, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}; typical values are 0.99 to 0.9999.")
        if len(model.weights) != len(ema_model.weights):
            raise ValueError("model and ema_model must have the same architecture (same number of weights).")
        self.model = model
        self.ema_model = ema_model
        self.decay = float(decay)

    def reset(self):
        """Set the average to the current weights (done once, before training)."""
        self.ema_model.set_weights(self.model.get_weights())

    def update(self):
        """One EMA step (works eagerly and inside ``tf.function``)."""
        decay = self.decay
        for average, weight in zip(
            self.ema_model.trainable_weights, self.model.trainable_weights
        ):
            average.assign(decay * average + (1.0 - decay) * weight)
        for average, weight in zip(
            self.ema_model.non_trainable_weights,
            self.model.non_trainable_weights,
        ):
            average.assign(weight)


def scale_for_batch(factor: float, *, base_lr: float = 1e-4, decay_steps: int = SEED_DECAY_STEPS,
                    ema_decay: float = 0.999, rule: str = "sqrt") -> dict:
    """The learning rate, decay horizon and EMA horizon for a batch ``factor`` times larger, in
    images seen (chapter "Scaling up", Eq. (12.1) (``eq-linear-scaling``)).

    ``factor`` times as many images per step means ``factor`` times fewer steps for the same
    images: the seed schedule's ``decay_steps`` (Eq. (8.2) (``eq-seed-lr``)) is divided by
    ``factor``, and the EMA (Eq. (8.3) (``eq-ema``)), which averages over about
    ``1 / (1 - decay)`` steps, gets ``decay ** factor`` so that it averages over the same number
    of images. The rate is multiplied by ``sqrt(factor)`` (``rule="sqrt"``, for Adam) or
    ``factor`` (``"linear"``, for SGD). Returns ``learning_rate``, ``decay_steps`` and
    ``ema_decay``.
    """
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}.")
    if rule not in ("sqrt", "linear"):
        raise ValueError(f"Unknown rule {rule!r}: use 'sqrt' (Adam) or 'linear' (SGD).")
    return {"learning_rate": base_lr * (factor**0.5 if rule == "sqrt" else factor),
            "decay_steps": max(1, round(decay_steps / factor)),
            "ema_decay": float(ema_decay) ** factor}


class WarmUp(_keras().optimizers.schedules.LearningRateSchedule):
    """A linear warm-up in front of any schedule: ``lr(step) = after(step) * (step + 1) /
    warmup_steps`` for ``step < warmup_steps``, then ``after(step)``."""

    def __init__(self, after, warmup_steps: int):
        if int(warmup_steps) < 0:
            raise ValueError(f"warmup_steps must be 0 or more, got {warmup_steps}.")
        self.after, self.warmup_steps = after, int(warmup_steps)

    def __call__(self, step):
        import keras

        step = keras.ops.cast(step, "float32")
        ramp = keras.ops.minimum(1.0, (step + 1.0) / max(1, self.warmup_steps))
        return keras.ops.cast(self.after(step), "float32") * ramp

    def get_config(self):
        return {"after": self.after, "warmup_steps": self.warmup_steps}
