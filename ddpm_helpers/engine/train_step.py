"""One training step of a DDPM, compiled (chapter "Training", ``sec-training``).

- :func:`step_keys` and :func:`draw_step_randomness`: the random numbers of step ``s`` (time
  steps, noise, label dropout) come from stateless generators keyed by ``(seed, s)`` with the
  Philox algorithm named explicitly (``RNG_ALGORITHM``), so that a resumed run draws what an
  uninterrupted one drew, with or without XLA (TensorFlow's default, "auto_select", draws
  differently under XLA).
- :func:`loss_and_gradients`: the loss of Eq. (8.1) (``eq-train-loss``) on a replica's share of the
  batch and its gradients, the one core of the step on one device and under a ``tf.distribute``
  strategy (:func:`ddpm_helpers.engine.distribute.make_distributed_train_step`): the draws, the
  float32 loss under mixed precision, the division by the replicas and float16's loss scaling are
  written only there.
- :class:`StepGuard`: records the first step whose loss or gradient is not finite (``bad_step``).
- :func:`simple_train_step`: one step of Algorithm 1 as the paper writes it (what the chapter shows);
- :func:`make_train_step`: that core, the Adam update and the EMA update of Eq. (8.3) (``eq-ema``)
  on one device, the updates skipped from the first step whose loss or gradient is not finite.
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


def scales_loss(optimizer) -> bool:
    """Whether ``optimizer`` is a ``keras.optimizers.LossScaleOptimizer`` (float16 mixed precision):
    the loss is multiplied by its scale before the gradients, which it divides by that scale again
    and skips (lowering the scale) when they overflow."""
    import keras

    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def loss_and_gradients(
    model,
    optimizer,
    schedule,
    loss_fn,
    images,
    labels,
    step,
    *,
    seed: int = 0,
    num_classes: int | None = None,
    label_dropout: float = 0.0,
    replica=0,
    replicas: int = 1,
):
    """The loss of Eq. (8.1) (``eq-train-loss``) on replica ``replica``'s share of the batch, and
    its gradients.

    The core of every training step, on one device (``replicas=1``, :func:`make_train_step`) or
    under a strategy (:func:`ddpm_helpers.engine.distribute.make_distributed_train_step`):

    1. t ~ U{0, ..., T-1} and noise ~ N(0, I) for the *whole* batch from the keys of
       ``(seed, step)``, labels dropped to the null label with probability ``label_dropout``: the
       numbers of a step do not depend on how many replicas share the batch;
    2. the replica keeps its slice of the batch (the whole batch on one device);
    3. x_t = q_sample(x_0, t, noise) (Eq. (2.5) (``eq-q-xt-x0``)), and the network predicts the
       noise, cast to float32 so that the loss is float32 under mixed precision too;
    4. loss = ``loss_fn(noise, predicted)`` divided by ``replicas``, so that the gradients Keras
       sums over the replicas are those of the batch's mean loss. A ``keras.losses.Loss`` divides
       by the replicas itself inside ``strategy.run``; a plain function must not (one that calls a
       Keras loss object inside would be divided twice);
    5. the gradients of the loss multiplied by the loss scale when :func:`scales_loss` (float16;
       the optimizer divides them by it again).

    Returns ``(loss, gradients)``: the loss unscaled, the gradients as ``optimizer`` wants them.
    """
    import keras
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import q_sample

    keys = step_keys(seed, step)
    shape = tf.shape(images)
    t, noise = _draw(keys, shape[0], shape[1:], schedule.timesteps)
    if num_classes:
        labels = drop_labels(labels, keys[2], num_classes, label_dropout)
    if replicas > 1:  # this replica's slice of the batch
        size = shape[0] // replicas
        part = tf.range(size) + replica * size
        images, t, noise = (tf.gather(v, part) for v in (images, t, noise))
        if num_classes:
            labels = tf.gather(labels, part)
    x_t = q_sample(schedule, images, t, noise)
    inputs = [x_t, t, labels] if num_classes else [x_t, t]
    with tf.GradientTape() as tape:
        # float32 under mixed precision too
        predicted = tf.cast(model(inputs, training=True), tf.float32)
        loss = loss_fn(noise, predicted)
        if replicas > 1 and not isinstance(loss_fn, keras.losses.Loss):
            loss = loss / replicas  # a Keras loss divides itself
        scaled = optimizer.scale_loss(loss) if scales_loss(optimizer) else loss
    gradients = tape.gradient(scaled, model.trainable_variables)
    return loss, gradients


def not_finite(loss, gradients):
    """``[loss not finite, some gradient not finite]``, a boolean tensor of shape (2,)."""
    import tensorflow as tf

    gradients_finite = [tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None]
    loss_finite = tf.reduce_all(tf.math.is_finite(loss))
    return tf.logical_not(tf.stack([loss_finite, tf.reduce_all(gradients_finite)]))


class StepGuard:
    """The first training step whose loss or gradient is not finite.

    ``bad_step`` (a ``tf.Variable``) is 0 while all is well, then the number of that step counted
    from 1; ``bad_what`` is 1 for the loss, 2 for a gradient. With loss scaling (float16) only the
    loss counts: an overflowing gradient is the optimizer's to skip.
    """

    def __init__(self, optimizer):
        import tensorflow as tf

        self.bad_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_step")
        self.bad_what = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_what")
        self.scales_loss = scales_loss(optimizer)

    def record(self, step, bad):
        """Record step ``step`` (counted from 0) if it is the first with ``bad``, from
        :func:`not_finite`."""
        import tensorflow as tf

        loss_bad, gradient_bad = bad[0], tf.logical_and(bad[1], not self.scales_loss)
        first_bad = tf.logical_and(self.ok(), tf.logical_or(loss_bad, gradient_bad))
        what = tf.where(loss_bad, tf.constant(1, tf.int64), 2)
        self.bad_what.assign(tf.where(first_bad, what, self.bad_what))
        self.bad_step.assign(tf.where(first_bad, tf.cast(step, tf.int64) + 1, self.bad_step))

    def ok(self):
        """True while no step was bad."""
        return self.bad_step == 0

    def attach(self, train_step):
        """``train_step`` with ``bad_step`` and ``bad_what`` as attributes."""
        train_step.bad_step, train_step.bad_what = self.bad_step, self.bad_what
        return train_step


def simple_train_step(model, optimizer, schedule, loss_fn, x0, t, noise):
    """One step of Algorithm 1 of Ho et al. (2020), as written: the loss of Eq. (8.1)
    (``eq-train-loss``) for the images ``x0`` at time indices ``t`` with the noise ``noise``, and a
    gradient step.

    :func:`make_train_step` takes exactly this step (a test checks it, update for update), compiled
    into one graph and with what a long run needs around it: t and the noise drawn from keys of
    ``(seed, step)``, label dropout, mixed precision, several replicas, the NaN guard and the EMA.
    """
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import q_sample

    # x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
    x_t = q_sample(schedule, x0, t, noise)
    with tf.GradientTape() as tape:
        predicted = model([x_t, t], training=True)  # eps_theta(x_t, t)
        loss = loss_fn(noise, predicted)  # the mean of l(eps - eps_theta)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss


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
    """The compiled training step ``train_step(images, labels, step) -> loss`` on one device.

    1. the loss of Eq. (8.1) (``eq-train-loss``) and its gradients (:func:`loss_and_gradients`: t
       and the noise keyed by ``(seed, step)``, x_t of Eq. (2.5) (``eq-q-xt-x0``), the network's
       prediction);
    2. the Adam update;
    3. the EMA update of the averaged weights (Eq. (8.3) (``eq-ema``)).

    Steps 2 and 3 happen only if the loss and every gradient are finite and no earlier step was
    not (with a ``keras.optimizers.LossScaleOptimizer``, float16, only the loss is checked: that
    optimizer skips overflowing steps itself): the first step that is not records its number
    (counted from 1) in ``train_step.bad_step`` (a ``tf.Variable``, 0 while all is well;
    ``train_step.bad_what`` is 1 for the loss, 2 for a gradient, see :class:`StepGuard`), and from
    then on the weights stay as they were. The caller reads ``bad_step`` when it needs to (before
    writing a checkpoint), not after every step.
    """
    import tensorflow as tf

    if not getattr(optimizer, "built", True):
        # its variables cannot be created inside the step's tf.cond
        optimizer.build(model.trainable_variables)
    guard = StepGuard(optimizer)

    def update(gradients):
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        if ema is not None:
            ema.update()
        return tf.constant(True)

    @tf.function(jit_compile=jit_compile)
    def train_step(images, labels, step):
        loss, gradients = loss_and_gradients(
            model, optimizer, schedule, loss_fn, images, labels, step,
            seed=seed, num_classes=num_classes, label_dropout=label_dropout,
        )
        guard.record(step, not_finite(loss, gradients))
        tf.cond(
            guard.ok(),
            lambda: update(gradients),
            lambda: tf.constant(False),
        )
        return loss

    return guard.attach(train_step)


def build_models(profile, num_classes: int | None = None):
    """The U-Net of ``profile`` (chapter "The U-Net") and a second one for the EMA weights."""
    from ddpm_helpers.method.unet import build_unet_for_profile

    model = build_unet_for_profile(profile, num_classes=num_classes)
    ema_model = build_unet_for_profile(profile, num_classes=num_classes)
    return model, ema_model



def build_training_state(profile, *, num_classes, lr_schedule: str, steps: int, warmup_steps: int = 0, strategy=None,
                         precision: str = "float32", lr_decay_steps: int | None = None):
    """``(model, ema_model, optimizer, ema, rate)`` for training ``profile``'s U-Net, created in
    ``strategy``'s scope under the Keras dtype ``precision`` policy: Adam with the learning rate
    ``rate`` (Eq. (8.2) (``eq-seed-lr``) or another
    :func:`~ddpm_helpers.engine.learning_rates.make_learning_rate` schedule; loss scaling for
    float16) and the EMA of Eq. (8.3) (``eq-ema``), started at the initial weights.
    ``lr_decay_steps``: the seed schedule's ``decay_steps`` (default: the tutorial's 100,000).
    """
    import contextlib

    import keras

    from ddpm_helpers.engine.precision import dtype_policy
    from ddpm_helpers.engine.learning_rates import ExponentialMovingAverage, WarmUp, make_learning_rate

    with strategy.scope() if strategy is not None else contextlib.nullcontext(), dtype_policy(precision):
        model, ema_model = build_models(profile, num_classes)
        rate = make_learning_rate(lr_schedule, profile.learning_rate, steps, lr_decay_steps)
        if warmup_steps:
            rate = WarmUp(rate, warmup_steps)  # a linear ramp over the first warmup_steps steps
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
    Eq. (8.1) (``eq-train-loss``) of chapter "Training".
    """
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import diffusion_loss, q_sample

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

    from ddpm_helpers.method.diffusion import diffusion_loss
    from ddpm_helpers.engine.learning_rates import ExponentialMovingAverage, make_learning_rate
    from ddpm_helpers.method.schedules import make_schedule

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
