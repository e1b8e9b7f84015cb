"""Training under a ``tf.distribute`` strategy (chapter "Training", ``sec-training``; for GPUs and TPUs).

- :func:`make_strategy`: ``"none"``, ``"mirrored"`` (several GPUs, or ``replicas`` logical CPU
  devices so that it can be tested on a CPU), ``"multiworker"`` or ``"tpu"``.
- :func:`make_distributed_train_step`: the one-device step's core,
  :func:`ddpm_helpers.engine.train_step.loss_and_gradients`, run by every replica on its slice of the
  global batch. The time steps and noise are drawn for the *global* batch from the keys of
  ``(seed, step)`` and each replica takes its slice, so a run's numbers do not depend on how many
  replicas share the batch; each replica's loss is divided by the number of replicas (a
  ``keras.losses.Loss`` does it itself, a plain function's loss is divided by the step), so the
  gradients Keras sums over the replicas are those of the global batch's mean loss
  (Eq. (8.1) (``eq-train-loss``)); under float16 every replica scales its loss as on one device,
  which Keras' ``LossScaleOptimizer`` undoes, and an overflow on any replica makes every replica
  skip the step. A loss or gradient that is not finite is recorded in ``bad_step`` as in the
  one-device step and the EMA (Eq. (8.3) (``eq-ema``)) stops; Adam's update cannot be skipped under
  a strategy (it synchronises the replicas, which TensorFlow does not allow inside a ``tf.cond``),
  but :func:`ddpm_helpers.engine.training.train` reads ``bad_step`` before every checkpoint and
  stops before saving: no non-finite weights are written.
- Mixed precision (the Keras dtype policy the models are built under) is in
  :mod:`ddpm_helpers.engine.precision`.
"""

from __future__ import annotations


STRATEGIES = ("none", "mirrored", "multiworker", "tpu")


def make_strategy(name: str = "none", replicas: int | None = None):
    """The ``tf.distribute`` strategy ``name`` (None for ``"none"``).

    ``replicas`` with ``"mirrored"`` on a machine without GPUs splits the CPU into that many
    logical devices; it must come before TensorFlow first uses the CPU (at the start of a process).
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Valid: {', '.join(STRATEGIES)}.")
    if replicas is not None and (replicas < 1 or name != "mirrored"):
        raise ValueError(f"--replicas needs --strategy mirrored and a count of at least 1, got {name!r}, {replicas}.")
    if name == "none":
        return None
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            raise ValueError(
                "--strategy tpu found no TPU on this machine: in Colab choose Runtime > Change runtime "
                "type > TPU (the chapter's first cell installs tensorflow-tpu), or use --strategy mirrored "
                f"(GPUs) or none ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})."
            ) from error
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    devices = None
    if replicas is not None and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
        except RuntimeError as error:  # TensorFlow already set up its devices in this process
            if len(tf.config.list_logical_devices("CPU")) != replicas:
                raise ValueError(f"Cannot split the CPU into {replicas} devices once TensorFlow has started: "
                                 "pass --replicas in a fresh process.") from error
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    logger = tf.get_logger()  # MirroredStrategy logs its devices at INFO; setup_strategy says it in one line
    level = logger.level
    logger.setLevel("WARNING")
    try:
        return tf.distribute.MirroredStrategy(devices)
    finally:
        logger.setLevel(level)


def setup_strategy(strategy, replicas, batch_size: int, config: dict):
    """The strategy of a run (None for one device; a name goes to :func:`make_strategy`); records the
    replicas in ``config`` (XLA off under a strategy) and says what is used."""
    if isinstance(strategy, str) or (strategy is None and replicas is not None):
        strategy = make_strategy(strategy or "mirrored", replicas)
    count = 1 if strategy is None else strategy.num_replicas_in_sync
    if batch_size % count:
        raise ValueError(f"The batch of {batch_size} images cannot be split evenly over {count} replicas: pass "
                         f"--batch-size (train(profile.replace(batch_size=...))) with a multiple of {count}.")
    config["replicas"] = count
    if strategy is not None:
        asked = " (--xla ignored)" if config["xla"] else ""
        print(f"XLA is not used under a distribution strategy{asked}; a TPU compiles with XLA in any case.")
        config["xla"] = False
        replica = "replica" if count == 1 else "replicas"
        print(f"Training on {count} {replica} ({type(strategy).__name__}), {batch_size // count} images each.")
    return strategy


def make_distributed_train_step(strategy, model, optimizer, schedule, loss_fn, *, ema=None, seed: int = 0,
                                num_classes: int | None = None, label_dropout: float = 0.0):
    """``train_step(images, labels, step) -> loss`` on the global batch, run by every replica of
    ``strategy`` (whose scope created ``model``, ``optimizer`` and the EMA model). Same contract as
    :func:`ddpm_helpers.engine.train_step.make_train_step`, ``bad_step`` and ``bad_what`` included.

    Every replica computes the loss of Eq. (8.1) (``eq-train-loss``) on its slice of the batch with
    :func:`ddpm_helpers.engine.train_step.loss_and_gradients` (the one-device step's core: the same draws,
    casts, replica division and loss scaling), and Keras sums the gradients over the replicas in
    ``apply_gradients``. The EMA of Eq. (8.3) (``eq-ema``) is updated while no step was bad.
    """
    import tensorflow as tf

    from ddpm_helpers.engine.train_step import StepGuard, loss_and_gradients, not_finite

    replicas = strategy.num_replicas_in_sync
    guard = StepGuard(optimizer)
    options = {"seed": seed, "num_classes": num_classes, "label_dropout": label_dropout,
               "replicas": replicas}

    def replica_step(images, labels, step):
        context = tf.distribute.get_replica_context()
        loss, gradients = loss_and_gradients(model, optimizer, schedule, loss_fn, images, labels,
                                             step, replica=context.replica_id_in_sync_group,
                                             **options)
        bad = tf.cast(not_finite(loss, gradients), tf.int64)
        bad = context.all_reduce(tf.distribute.ReduceOp.SUM, bad) > 0  # the same on every replica
        if guard.scales_loss:
            # Keras' LossScaleOptimizer looks for an overflow in the first replica's gradients
            # only: all replicas show the one any replica met, so that all skip the step
            poison = tf.where(bad[1], float("nan"), 1.0)
            gradients = [g if g is None else g * poison for g in gradients]
        # Unlike the one-device step this update cannot sit in a tf.cond (a synchronisation point
        # may not): after a bad step the loop stops before saving.
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return context.all_reduce(tf.distribute.ReduceOp.SUM, loss), bad

    def ema_update():
        ema.update()
        return tf.constant(True)

    @tf.function
    def train_step(images, labels, step):
        loss, bad = strategy.run(replica_step, args=(images, labels, step))
        guard.record(step, strategy.experimental_local_results(bad)[0])
        if ema is not None:
            tf.cond(guard.ok(), ema_update, lambda: tf.constant(False))
        return strategy.experimental_local_results(loss)[0]

    return guard.attach(train_step)
