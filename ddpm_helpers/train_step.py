"""One training step of a DDPM, compiled (chapter "Training", ``sec-training``).

- :func:`step_keys` and :func:`draw_step_randomness`: the random numbers of step ``s`` (time
  steps, noise, label dropout) come from stateless generators keyed by ``(seed, s)`` with the
  Philox algorithm named explicitly (:data:`RNG_ALGORITHM`), so that a resumed run draws what an
  uninterrupted one drew, with or without XLA (TensorFlow's default, "auto_select", draws
  differently under XLA).
- :func:`make_train_step`: the loss of Eq. (eq-train-loss), its gradients, the Adam update and
  the EMA update of Eq. (eq-ema), skipped when the loss or any gradient is not finite.
- :func:`evaluation_loss` and :func:`measure_step_time`: a fixed-noise yardstick and a timer.
"""

from __future__ import annotations

import time

import numpy as np

RNG_ALGORITHM = "philox"  # stateless RNG of the step: the same draws with and without XLA


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss or gradient; the message names the step and the last good checkpoint."""


def step_keys(seed: int, step, count: int = 3):
    """``count`` independent stateless-RNG keys (int64, shape (count, 2)) for training step ``step``.

    Keyed by ``(seed, step)`` only, so a resumed run draws exactly what an uninterrupted run drew.
    """
    import tensorflow as tf

    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_split(
        key, num=count, alg=RNG_ALGORITHM
    )


def _draw(keys, batch_size, image_shape, timesteps: int):
    import tensorflow as tf

    t = tf.random.stateless_uniform([batch_size], seed=keys[0], minval=0, maxval=timesteps, dtype=tf.int32,
                                    alg=RNG_ALGORITHM)
    noise = tf.random.stateless_normal(tf.concat([[batch_size], image_shape], 0), seed=keys[1], alg=RNG_ALGORITHM)
    return t, noise


def draw_step_randomness(seed: int, step, batch_size: int, image_shape, timesteps: int):
    """The time indices t (int32, (B,)) and noise ((B, H, W, C)) of training step ``step``, and the
    key left for the label dropout."""
    import tensorflow as tf

    keys = step_keys(seed, step)
    t, noise = _draw(keys, batch_size, tf.constant(list(image_shape), tf.int32), timesteps)
    return t, noise, keys[2]


def drop_labels(labels, key, num_classes: int, label_dropout: float):
    """Replace each label by the null label ``num_classes`` with probability ``label_dropout``.

    Trains the unconditional model inside the conditional one, which classifier-free guidance
    needs (Ho & Salimans 2022; chapter "Your turn").
    """
    import tensorflow as tf

    if label_dropout <= 0.0:
        return labels
    keep = (
        tf.random.stateless_uniform(
            tf.shape(labels), seed=key, alg=RNG_ALGORITHM
        )
        >= label_dropout
    )
    return tf.where(
        keep,
        labels,
        tf.fill(tf.shape(labels), tf.constant(num_classes, labels.dtype)),
    )


def make_train_step(
    model,
    optimizer,
    schedule,
    loss_fn,
    *,
    ema=None,
    seed: int = 0,
    num_classes: int | None = None,
    label_dropout: float = 0.0,
    jit_compile: bool = False,
):
    """The compiled training step ``train_step(images, labels, step) -> loss``.

    1. draw t ~ U{0, ..., T-1} and noise ~ N(0, I) from keys of ``(seed, step)``;
    2. x_t = q_sample(x_0, t, noise) (chapter "Forward and reverse process", Eq. (eq-q-xt-x0));
    3. predict the noise with ``model([x_t, t])`` (or ``model([x_t, t, label])`` when conditional,
       labels dropped to the null label with probability ``label_dropout``);
    4. loss = ``loss_fn(noise, predicted)`` (Eq. (eq-train-loss)); gradients; Adam update;
    5. EMA update of the averaged weights (Eq. (eq-ema)).

    With a ``keras.optimizers.LossScaleOptimizer`` (float16 mixed precision) the loss is scaled
    before the gradients and only the loss is checked: that optimizer skips overflowing steps.
    Steps 4's update and 5 happen only if the loss and every gradient are finite and no earlier
    step was not: the first step that is not records its number (counted from 1) in
    ``train_step.bad_step`` (a ``tf.Variable``, 0 while all is well; ``train_step.bad_what`` is 1
    for the loss, 2 for a gradient), and from then on the weights stay as they were. The caller
    reads ``bad_step`` when it needs to (before writing a checkpoint), not after every step.
    """
    import keras
    import tensorflow as tf

    from ddpm_helpers.diffusion import q_sample

    timesteps = schedule.timesteps
    variables = model.trainable_variables
    if not getattr(optimizer, "built", True):
        # its variables cannot be created inside the step's tf.cond
        optimizer.build(variables)
    bad_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_step")
    bad_what = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_what")
    # float16 training scales the loss; its optimizer skips an overflow
    # (and lowers the scale after it) itself
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def update(gradients):
        optimizer.apply_gradients(zip(gradients, variables))
        if ema is not None:
            ema.update()
        return tf.constant(True)

    @tf.function(jit_compile=jit_compile)
    def train_step(images, labels, step):
        keys = step_keys(seed, step)
        shape = tf.shape(images)
        t, noise = _draw(keys, shape[0], shape[1:], timesteps)
        x_t = q_sample(schedule, images, t, noise)
        inputs = [x_t, t]
        if num_classes:
            inputs.append(
                drop_labels(labels, keys[2], num_classes, label_dropout)
            )
        with tf.GradientTape() as tape:
            # float32 under mixed precision too
            predicted = tf.cast(model(inputs, training=True), tf.float32)
            loss = loss_fn(noise, predicted)
            scaled = optimizer.scale_loss(loss) if scales_loss else loss
        gradients = tape.gradient(scaled, variables)
        loss_ok = tf.reduce_all(tf.math.is_finite(loss))
        gradients_ok = (
            tf.reduce_all(
                [
                    tf.reduce_all(tf.math.is_finite(g))
                    for g in gradients
                    if g is not None
                ]
            )
            if not scales_loss
            else tf.constant(True)
        )
        first_bad = tf.logical_and(
            bad_step == 0,
            tf.logical_not(tf.logical_and(loss_ok, gradients_ok)),
        )
        bad_what.assign(
            tf.where(
                first_bad,
                tf.where(loss_ok, tf.constant(2, tf.int64), 1),
                bad_what,
            )
        )
        bad_step.assign(
            tf.where(first_bad, tf.cast(step, tf.int64) + 1, bad_step)
        )
        tf.cond(
            bad_step == 0,
            lambda: update(gradients),
            lambda: tf.constant(False),
        )
        return loss

    train_step.bad_step, train_step.bad_what = bad_step, bad_what
    return train_step


def build_models(profile, num_classes: int | None = None):
    """The U-Net of ``profile`` (chapter "The U-Net") and a second one for the EMA weights."""
    from ddpm_helpers.unet import build_unet_for_profile

    model = build_unet_for_profile(profile, num_classes=num_classes)
    ema_model = build_unet_for_profile(profile, num_classes=num_classes)
    return model, ema_model



def build_training_state(profile, *, num_classes, lr_schedule: str, steps: int, strategy=None,
                         precision: str = "float32"):
    """``(model, ema_model, optimizer, ema, rate)`` for training ``profile``'s U-Net, created in
    ``strategy``'s scope under the Keras dtype ``precision`` policy: Adam with the learning rate
    ``rate`` (Eq. (eq-seed-lr) or another :func:`~ddpm_helpers.learning_rates.make_learning_rate`
    schedule; loss scaling for float16) and the EMA of Eq. (eq-ema), started at the initial weights.
    """
    import contextlib

    import keras

    from ddpm_helpers.distribute import dtype_policy
    from ddpm_helpers.learning_rates import ExponentialMovingAverage, make_learning_rate

    with strategy.scope() if strategy is not None else contextlib.nullcontext(), dtype_policy(precision):
        model, ema_model = build_models(profile, num_classes)
        rate = make_learning_rate(lr_schedule, profile.learning_rate, steps)
        optimizer = keras.optimizers.Adam(rate)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
        ema = ExponentialMovingAverage(model, ema_model, profile.ema_decay)
        ema.reset()
    return model, ema_model, optimizer, ema, rate


def evaluation_loss(model, schedule, images, *, loss: str = "mse", labels=None, num_classes: int | None = None,
                    seed: int = 1234, batch_size: int = 256, repeats: int = 1) -> float:
    """The loss of ``model`` on ``images`` with fixed t and noise (keyed by ``seed``): a noise-free yardstick.

    Unlike the training loss, whose t and noise change every step, this number moves only when
    the model does, so it can compare models (raw vs EMA weights, before vs after training).
    Eq. (eq-train-loss) of chapter "Training".
    """
    import tensorflow as tf

    from ddpm_helpers.diffusion import diffusion_loss, q_sample

    loss_fn = diffusion_loss(loss)
    images = np.asarray(images, np.float32)
    total, count = 0.0, 0
    for repeat in range(repeats):
        for start in range(0, len(images), batch_size):
            x0 = tf.constant(images[start:start + batch_size])
            n = int(x0.shape[0])
            t, noise, _ = draw_step_randomness(seed + repeat, start, n, x0.shape[1:], schedule.timesteps)
            inputs = [q_sample(schedule, x0, t, noise), t]
            if num_classes:
                inputs.append(tf.constant(np.asarray(labels[start:start + batch_size], np.int32)))
            predicted = model(inputs, training=False)
            total += float(loss_fn(noise, predicted)) * n
            count += n
    return total / count


def measure_step_time(profile, *, steps: int = 3, batch_size: int | None = None, seed: int = 0,
                      jit_compile: bool = True) -> dict:
    """Time the training step of ``profile``'s U-Net on random images (no data set needed).

    Returns ``seconds_per_step`` (the mean over ``steps`` steps after a first, compiling one),
    ``compile_seconds`` (that first step), ``batch_size``, ``parameters`` and
    ``estimated_hours`` = ``seconds_per_step * profile.train_steps / 3600``: an estimate of a
    full run on this machine (the data pipeline and checkpoints add a little).
    """
    import keras
    import tensorflow as tf

    from ddpm_helpers.diffusion import diffusion_loss
    from ddpm_helpers.learning_rates import ExponentialMovingAverage, make_learning_rate
    from ddpm_helpers.schedules import make_schedule

    batch_size = int(batch_size or profile.batch_size)
    keras.utils.set_random_seed(seed)
    model, ema_model = build_models(profile)
    optimizer = keras.optimizers.Adam(make_learning_rate("seed", profile.learning_rate, profile.train_steps))
    ema = ExponentialMovingAverage(model, ema_model, profile.ema_decay)
    schedule = make_schedule(profile.schedule, profile.timesteps)
    train_step = make_train_step(model, optimizer, schedule, diffusion_loss(profile.loss), ema=ema, seed=seed,
                                 jit_compile=jit_compile)
    shape = (batch_size, profile.image_size, profile.image_size, profile.channels)
    images = tf.random.stateless_uniform(shape, seed=[seed, 1], minval=-1.0, maxval=1.0)
    labels = tf.zeros([batch_size], tf.int32)
    began = time.perf_counter()
    float(train_step(images, labels, tf.constant(0, tf.int64)))
    compile_seconds = time.perf_counter() - began
    began = time.perf_counter()
    for step in range(1, steps + 1):
        loss = train_step(images, labels, tf.constant(step, tf.int64))
    float(loss)
    per_step = (time.perf_counter() - began) / steps
    return {"seconds_per_step": per_step, "compile_seconds": compile_seconds, "batch_size": batch_size,
            "steps_timed": steps, "parameters": int(model.count_params()),
            "estimated_hours": per_step * profile.train_steps / 3600.0}
