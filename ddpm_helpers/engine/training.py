"""Training a DDPM (chapter "Training", ``sec-training``): the loop, and the trained run every later chapter loads.

The pieces live in modules of their own, and are re-exported here under the names the book uses:

- :mod:`ddpm_helpers.engine.learning_rates`: Adam's step size (Eq. (8.2) (``eq-seed-lr``)) and the
  EMA (Eq. (8.3) (``eq-ema``));
- :mod:`ddpm_helpers.engine.train_step`: the compiled step (Eq. (8.1) (``eq-train-loss``)) and its
  random numbers;
- :mod:`ddpm_helpers.engine.checkpoints`: ``tf.train.Checkpoint`` + ``CheckpointManager``;
- :mod:`ddpm_helpers.engine.runs`: run folders, their configuration and format version, the lock;
- :mod:`ddpm_helpers.engine.distribute`: ``tf.distribute`` strategies and mixed precision.

This module holds :func:`train` (the loop), :class:`.TrainedRun`, :func:`.load_run` and
:func:`load_or_train`. Reproducibility: the random numbers of step ``s`` come from keys of
``(seed, s)`` and the data order from ``(seed, epoch)``, so a checkpoint needs only the weights,
the EMA weights, the optimizer and ``s``: a run interrupted and resumed ends with the weights of
one that ran straight through.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ddpm_helpers.engine.checkpoints import HISTORY_KEYS, RunCheckpoint, checkpoint_path, latest_checkpoint, list_checkpoints
from ddpm_helpers.engine.distribute import make_distributed_train_step, make_strategy, setup_strategy
from ddpm_helpers.engine.precision import precision_policy
from ddpm_helpers.engine.learning_rates import (LR_SCHEDULES, ConstantLearningRate, ExponentialMovingAverage,
                                         SeedLearningRate, learning_rates, make_learning_rate, seed_learning_rate)
from ddpm_helpers.engine.runs import (CONFIG_FILE, FORMAT_VERSION, RUNS_DIR_ENV_VAR, RunBusyError, _atomic_write_bytes,
                               config_differences, config_identity, default_runs_dir, make_config, move_aside,
                               prepare_run_dir, profile_from_dict, read_config, resume_command, run_folder, run_lock,
                               run_name, stale_reason, stored_config, write_config)
from ddpm_helpers.engine.train_step import (RNG_ALGORITHM, NonFiniteLossError, build_models, build_training_state,
                                     draw_step_randomness, drop_labels, evaluation_loss, loss_and_gradients,
                                     make_train_step, measure_step_time, simple_train_step, step_keys)
from ddpm_helpers.engine.interrupts import TrainingInterrupted, stop_requests
from ddpm_helpers.engine.trained_run import TrainedRun, load_run, start_from, starting_point

__all__ = [
    "CONFIG_FILE", "FORMAT_VERSION", "LR_SCHEDULES", "RNG_ALGORITHM", "RUNS_DIR_ENV_VAR", "RUNNING_LOSS_DECAY",
    "XLA_MIN_STEPS", "ConstantLearningRate", "ExponentialMovingAverage", "NonFiniteLossError", "RunBusyError",
    "RunCheckpoint", "TrainingInterrupted", "xla_by_default",
    "make_strategy", "profile_from_dict",
    "SeedLearningRate", "TrainedRun", "_atomic_write_bytes", "build_models", "checkpoint_path",
    "config_differences", "config_identity", "default_runs_dir", "draw_step_randomness", "drop_labels", "evaluation_loss",
    "latest_checkpoint", "learning_rates", "list_checkpoints", "load_or_train", "load_run", "make_config",
    "make_learning_rate", "make_train_step", "measure_step_time", "profile_from_dict", "read_config", "run_name",
    "seed_learning_rate", "simple_train_step", "loss_and_gradients", "start_from", "starting_point", "step_keys", "train",
    "write_config",
]

XLA_MIN_STEPS = 1000  # train() compiles with XLA from this many steps on (see xla_by_default)
RUNNING_LOSS_DECAY = 0.98  # smoothing of the loss curve shown by the progress bar and the chapter
PROGRESS_SECONDS = 0.5  # the loop reads the losses back (a host sync) at most this often, and at checkpoints


def xla_by_default(steps: int) -> bool:
    """Whether :func:`train` compiles the step with XLA when ``jit_compile`` is not given.

    Yes for runs of at least ``XLA_MIN_STEPS`` steps, except on a CPU that TensorFlow may use with
    one thread only (no GPU or TPU, ``TF_NUM_INTRAOP_THREADS=1``, as ``make book`` sets for each of
    its two processes): there the benchmark record (``benchmarks/bench_cpu_options.py``, appendix
    "Performance") has the fused step slower per step than the plain one at the default batch,
    and its compilation takes longer.
    """
    import os

    import tensorflow as tf

    if steps < XLA_MIN_STEPS:
        return False
    if tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"):
        return True
    threads = (tf.config.threading.get_intra_op_parallelism_threads()
               or int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or os.cpu_count() or 1)
    return threads > 1


class _History:
    """The loss curve: losses stay tensors until :meth:`flush` reads them back, all at once."""

    def __init__(self, history: dict, rates: np.ndarray, start: int):
        self.history, self.rates, self.start, self.pending = history, rates, start, []
        self.running = history["running_loss"][-1] if history["running_loss"] else None

    def flush(self, step: int):
        import tensorflow as tf

        losses = np.asarray(tf.stack(self.pending) if len(self.pending) > 1 else self.pending, np.float64)
        first = step - len(losses) + 1
        for offset, loss in enumerate(losses.tolist()):
            self.running = loss if self.running is None else (
                RUNNING_LOSS_DECAY * self.running + (1 - RUNNING_LOSS_DECAY) * loss)
            # step s (counted from 1) is Adam's iteration s - 1, which used the rate schedule(s - 1)
            lr = float(self.rates[first + offset - 1 - self.start])
            for key, value in (("step", first + offset), ("loss", loss), ("running_loss", self.running), ("lr", lr)):
                self.history[key].append(value)
        self.pending.clear()
        return [("loss", self.history["loss"][-1]), ("running_loss", self.running), ("lr", self.history["lr"][-1])]


class _Clock:
    """Wall time of a run (all its sessions) and its speed after the first, compiling, step."""

    def __init__(self, start: int, meta: dict):
        self.start, self.previous = start, float(meta.get("train_seconds") or 0.0)
        self.began, self.timed_from = time.perf_counter(), None

    def compiled(self) -> float:
        self.timed_from = time.perf_counter()
        return self.timed_from - self.began

    def meta(self, step: int, seed: int, steps_per_epoch: int) -> dict:
        """What a checkpoint records besides the weights: the data position, the times."""
        now, timed = time.perf_counter(), step - self.start - 1
        epoch, batch = divmod(step, steps_per_epoch)
        return {"seed": seed, "epoch": epoch, "batch_in_epoch": batch, "steps_per_epoch": steps_per_epoch,
                "train_seconds": self.previous + now - self.began,
                "steps_per_second": timed / (now - self.timed_from) if timed else None}


def _non_finite_error(train_step, steps, run_dir, last_saved):
    bad, what = int(train_step.bad_step), ("loss" if int(train_step.bad_what) == 1 else "a gradient")
    kept = (f"the last good checkpoint is {checkpoint_path(run_dir, last_saved)} (step {last_saved})"
            if last_saved is not None else "no checkpoint had been written yet")
    return NonFiniteLossError(
        f"Training stopped: {what} became NaN or infinite at step {bad} of {steps} (run {run_dir}). No update was "
        f"applied from that step on and nothing was saved after it; {kept}. Lower the learning rate "
        "(--learning-rate, or train(learning_rate=...)) or change the seed of the batches and noise (--seed), "
        "and continue from that checkpoint with --resume / resume=True; or check the data for NaNs."
    )


def _next_batch(batches, source):
    import tensorflow as tf

    from ddpm_helpers.engine.data import find_unreadable_images, unreadable_error

    try:
        return next(batches)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        bad = find_unreadable_images(source.files) if source.files else []
        if bad:
            raise unreadable_error(source.name[len("folder:"):], bad, source.count) from error
        raise


def train(profile=None, run_dir=None, *, steps: int | None = None, resume: bool = False, data=None,
          seed: int | None = None, progress: bool = True, num_classes: int | None = None,
          label_dropout: float | None = None, lr_schedule: str | None = None, learning_rate: float | None = None,
          checkpoint_every: int | None = None, keep_checkpoints: int = 2, warmup_steps: int | None = None,
          lr_decay_steps: int | None = None, jit_compile: bool | None = None,
          loss_fn=None, on_step=None, strategy=None, replicas: int | None = None,
          mixed_precision: bool | None = None, tensorboard: bool = False,
          sample_every: int | None = None, init_from=None) -> TrainedRun:
    """Train the profile's U-Net as a DDPM and write checkpoints and ``config.json`` to ``run_dir``.

    - ``steps`` (default ``profile.train_steps``), ``seed`` (default ``profile.seed``), ``data``
      (default ``profile.dataset``; any spec :func:`ddpm_helpers.engine.data.load_data` accepts),
      ``learning_rate`` (default ``profile.learning_rate``), the base of ``lr_schedule`` (a name
      for :func:`.make_learning_rate`; default ``"seed"``), with a linear warm-up over the first
      ``warmup_steps`` steps if given (:class:`.WarmUp`); ``lr_decay_steps`` is the seed schedule's
      ``decay_steps`` (default 100,000; for a batch ``k`` times larger,
      :func:`.learning_rates.scale_for_batch` gives it with the rate and the EMA decay).
    - ``num_classes``: train a class-conditional model (``model([x, t, label])``) on the data's
      labels; ``label_dropout`` replaces a label by the null label ``num_classes`` with that
      probability (for classifier-free guidance).
    - ``init_from``: the folder of a trained run to start from instead of random weights (its EMA
      weights, layer by layer; a layer it lacks, such as the label embedding of a conditional model
      started from an unconditional one, starts at zero: :func:`.trained_run.start_from`). The
      optimizer and the EMA start afresh; ``config.json`` records the source's name, step and
      configuration, so retraining the source makes this run stale.
    - A checkpoint is written every ``checkpoint_every`` (default ``profile.checkpoint_every``)
      steps, at the end, and when SIGINT (Ctrl-C, a notebook's stop button) or SIGTERM arrives:
      then training stops after the step it is in, saves it and raises
      :class:`~ddpm_helpers.engine.interrupts.TrainingInterrupted`, whose message is the command that
      continues it. The newest ``keep_checkpoints`` are kept.
    - ``resume=True`` continues from the newest checkpoint of ``run_dir`` and ends with the weights
      an uninterrupted run would have; the settings not passed (profile, data, steps, seed,
      conditioning, schedule, precision) are the run's own, from its ``config.json``. It may change
      the learning rate, the steps, the seed of the batches and noise and XLA (a note says what
      changed), not the model, data or schedule. It refuses a folder that holds no run.
      Without it, a run already in ``run_dir`` is moved aside to ``run_dir.stale-<n>``; a folder
      holding other files is refused.
    - One writer at a time: another process writing ``run_dir`` makes this one raise
      :class:`~ddpm_helpers.engine.runs.RunBusyError` (:func:`~ddpm_helpers.engine.runs.run_lock`).
    - A NaN or infinite loss or gradient stops training with :class:`.NonFiniteLossError` naming the
      step and the last good checkpoint: that step's update is not applied and nothing is saved
      after it. ``loss_fn`` overrides the profile's loss (tests use it), ``on_step(step, loss)``
      is called after every step (which then reads every loss back at once: slower).
    - ``jit_compile``: compile the step with XLA (fewer, fused kernels; the first step compiles
      longer). Default: the resumed run's setting, else :func:`xla_by_default`.
    - ``strategy``: a ``tf.distribute`` strategy or a name for
      :func:`ddpm_helpers.engine.distribute.make_strategy` (with ``replicas``); ``profile.batch_size`` is
      the global batch. The result does not depend on the number of replicas (up to float
      rounding), and a run may be resumed with another one. XLA is not used under a strategy.
    - ``mixed_precision``: compute in bfloat16 (CPUs, TPUs) or float16 with loss scaling (GPUs),
      keeping the weights, the network's output, the loss and the EMA in float32
      (:func:`ddpm_helpers.engine.precision.precision_policy`).
    - ``tensorboard``: write loss, learning rate and steps/s to ``run_dir/logs`` for TensorBoard;
      ``sample_every``: every that many steps, a grid of EMA samples to
      ``run_dir/samples/step-NNNNNN.png`` (:class:`ddpm_helpers.engine.run_log.RunLog`; both off
      by default).
    """
    from ddpm_helpers.profiles import get_profile

    if run_dir is None:
        profile = get_profile() if profile is None else profile
        run_dir = default_runs_dir() / run_name(profile)
    run_dir = run_folder(run_dir)
    stored = stored_config(run_dir) if resume else None
    if stored is not None:  # what is not passed is the run's own
        profile = profile_from_dict(stored["profile"]) if profile is None else profile
        data = stored["data"] if data is None else data
        steps, seed = (stored[k] if v is None else v for k, v in (("steps", steps), ("seed", seed)))
        num_classes = stored.get("num_classes") if num_classes is None else num_classes
        label_dropout = stored.get("label_dropout", 0.0) if label_dropout is None else label_dropout
        lr_schedule = stored.get("lr_schedule", "seed") if lr_schedule is None else lr_schedule
        warmup_steps = stored.get("warmup_steps", 0) if warmup_steps is None else warmup_steps
        lr_decay_steps = stored.get("lr_decay_steps") if lr_decay_steps is None else lr_decay_steps
        if mixed_precision is None:
            mixed_precision = stored.get("precision", "float32") != "float32"
    profile = get_profile() if profile is None else profile
    profile = profile if learning_rate is None else profile.replace(learning_rate=float(learning_rate))
    settings = dict(
        steps=int(profile.train_steps if steps is None else steps), seed=int(profile.seed if seed is None else seed),
        num_classes=num_classes, label_dropout=float(label_dropout or 0.0), lr_schedule=lr_schedule or "seed",
        checkpoint_every=int(profile.checkpoint_every if checkpoint_every is None else checkpoint_every),
        keep_checkpoints=keep_checkpoints, warmup_steps=int(warmup_steps or 0),
        lr_decay_steps=None if lr_decay_steps is None else int(lr_decay_steps))
    _check_settings(**settings)
    source, config = _source_and_config(profile, data, xla=jit_compile, **{
        k: settings[k] for k in ("steps", "seed", "num_classes", "label_dropout", "lr_schedule")})
    if settings["warmup_steps"]:  # recorded only when used, so runs without one keep their identity
        config["warmup_steps"] = settings["warmup_steps"]
    if settings["lr_decay_steps"] is not None:  # likewise
        config["lr_decay_steps"] = settings["lr_decay_steps"]
    if init_from is not None or (stored or {}).get("init_from"):  # likewise
        config["init_from"] = starting_point(init_from) if init_from is not None else stored["init_from"]
        # where the starting weights are read from if no checkpoint exists yet
        settings["init_from"] = run_folder(init_from) if init_from is not None else run_dir.parent / stored[
            "init_from"]["run"]
    with run_lock(run_dir), stop_requests() as stop:  # a signal from here on stops after a step, saved
        return _train_in(stop, run_dir, profile, source, config, settings, resume=resume, progress=progress,
                         loss_fn=loss_fn, on_step=on_step, strategy=strategy, replicas=replicas,
                         mixed_precision=bool(mixed_precision), tensorboard=tensorboard, sample_every=sample_every)


def _train_in(stop, run_dir, profile, source, config, settings, *, resume, progress, loss_fn, on_step, strategy,
              replicas, mixed_precision, tensorboard=False, sample_every=None) -> TrainedRun:
    """The body of :func:`train`, holding the run folder's lock: set up, then the loop. A signal
    (``stop``) ends it after the step it arrives in (the first, if it comes during the set-up)."""
    import keras
    import tensorflow as tf

    from ddpm_helpers.method.diffusion import diffusion_loss
    from ddpm_helpers.notebook.pages import ProgressBar
    from ddpm_helpers.engine.pipeline import iterate_batches
    from ddpm_helpers.engine.run_log import RunLog
    from ddpm_helpers.method.schedules import make_schedule

    steps, seed, checkpoint_every = settings["steps"], settings["seed"], settings["checkpoint_every"]
    strategy = setup_strategy(strategy, replicas, profile.batch_size, config)
    config["precision"] = precision_policy(mixed_precision, strategy)
    if config["precision"] != "float32":
        print(f"Computing in {config['precision']} (Keras mixed precision; weights, loss and EMA in float32).")
    keras.utils.set_random_seed(seed)  # the initial weights (and, with pipeline.make_pipeline's seeds, the data order)
    model, ema_model, optimizer, ema, rate = build_training_state(
        profile, num_classes=settings["num_classes"], lr_schedule=settings["lr_schedule"], steps=steps,
        warmup_steps=settings["warmup_steps"], lr_decay_steps=settings["lr_decay_steps"],
        strategy=strategy, precision=config["precision"])
    start = prepare_run_dir(run_dir, config, resume, steps, xla_by_default(steps))
    checkpoint = RunCheckpoint(run_dir, model, ema_model, optimizer, seed=seed, keep=settings["keep_checkpoints"])
    _, history, meta = checkpoint.restore(start) if start else (0, {key: [] for key in HISTORY_KEYS}, {})
    checkpoint.seed.assign(seed)  # the seed that keys the steps from here on
    if not start and settings.get("init_from") is not None:
        start_from(model, settings["init_from"])
        ema.reset()  # the average starts at the starting weights
    write_config(run_dir, config)

    schedule = make_schedule(profile.schedule, profile.timesteps)
    step_options = dict(ema=ema, seed=seed, num_classes=settings["num_classes"],
                        label_dropout=settings["label_dropout"])
    loss_fn = loss_fn or diffusion_loss(profile.loss)
    if strategy is None:
        train_step = make_train_step(model, optimizer, schedule, loss_fn, jit_compile=config["xla"], **step_options)
    else:
        train_step = make_distributed_train_step(strategy, model, optimizer, schedule, loss_fn, **step_options)
    batches = iterate_batches(source, profile.batch_size, seed=seed, start_step=start, stop_step=steps)
    curve = _History(history, learning_rates(rate, start, steps), start)
    clock, last_saved, bar, last_flush = _Clock(start, meta), start or None, None, 0.0
    log = RunLog(run_dir, tensorboard=tensorboard, sample_every=sample_every, ema_model=ema_model, schedule=schedule,
                 image_shape=source.image_shape, num_classes=settings["num_classes"], history=history)

    for step in range(start + 1, steps + 1):
        images, labels = _next_batch(batches, source)
        curve.pending.append(train_step(images, labels, tf.constant(step - 1, tf.int64)))
        if bar is None:  # the first step traced and compiled the graph; the bar counts this session's steps
            curve.pending[-1].numpy()
            label = f"training {run_dir.name}" + (f" from step {start}" if start else "")
            bar = ProgressBar(steps - start, label=f"{label}: compiled the step in {clock.compiled():.1f} s",
                              enabled=progress, stateful_metrics=["loss", "running_loss", "lr"])
        stopping = stop.requested  # read once: a signal that comes later in this step is seen after the next
        saving = step % checkpoint_every == 0 or step == steps or stopping
        if saving or on_step is not None or (progress and time.perf_counter() - last_flush > PROGRESS_SECONDS):
            if int(train_step.bad_step):
                raise _non_finite_error(train_step, steps, run_dir, last_saved)
            bar.update(step - start, curve.flush(step))
            log.scalars(curve.history)
            last_flush = time.perf_counter()
            if on_step is not None:
                on_step(step, curve.history["loss"][-1])
        if saving:
            meta = clock.meta(step, seed, source.steps_per_epoch(profile.batch_size))
            checkpoint.save(step, curve.history, meta)
            log.flush()
            last_saved = step
        log.after_step(step)  # a grid of EMA samples every sample_every steps
        if stopping and step < steps:
            raise _interrupted(stop, step, steps, run_dir, strategy, replicas)

    log.close()
    return TrainedRun(model=model, ema_model=ema_model, schedule=schedule, profile=profile, history=curve.history,
                      run_dir=run_dir, config=config, step=max(start, steps),
                      train_seconds=float(meta.get("train_seconds") or 0.0),
                      steps_per_second=meta.get("steps_per_second") or float("nan"), optimizer=optimizer)


def _interrupted(stop, step, steps, run_dir, strategy, replicas):
    from ddpm_helpers.engine.interrupts import TrainingInterrupted

    names = {"MirroredStrategy": "mirrored", "MultiWorkerMirroredStrategy": "multiworker", "TPUStrategy": "tpu"}
    command = resume_command(run_dir, names.get(type(strategy).__name__), replicas)
    return TrainingInterrupted(
        f"Stopped by {stop.name} at step {step} of {steps}; saved {checkpoint_path(run_dir, step)}. "
        f"Continue with: {command} (in Python: train(..., resume=True)).", stop.signal_number, step)


def _source_and_config(profile, data, *, num_classes, **settings):
    """The training data (:func:`ddpm_helpers.engine.data.load_data`) and the run's configuration."""
    from ddpm_helpers.engine.data import load_data

    data_spec = profile.dataset if data is None else data
    source = load_data(data_spec, profile.image_size, profile.channels, split="train")
    if num_classes and source.num_classes is None:
        raise ValueError(f"A conditional model (num_classes={num_classes}) needs labelled data; {source.name!r} has none.")
    if num_classes and source.num_classes is not None and source.num_classes > num_classes:
        raise ValueError(f"The data has {source.num_classes} classes but num_classes={num_classes}.")
    config = make_config(profile, data_spec=data_spec if isinstance(data_spec, str) else source.name,
                         data_fingerprint=source.fingerprint, num_classes=num_classes, **settings)
    return source, config


def _check_settings(*, steps, seed, num_classes, label_dropout, lr_schedule, checkpoint_every, keep_checkpoints,
                    warmup_steps=0, lr_decay_steps=None):
    for name, value in (("steps", steps), ("checkpoint_every", checkpoint_every),
                        ("keep_checkpoints", keep_checkpoints)):
        if value is None or int(value) < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{name} ({flag}) must be at least 1, got {value}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps (--warmup-steps) must be 0 or more, got {warmup_steps}.")
    if lr_decay_steps is not None and lr_decay_steps < 1:
        raise ValueError(f"lr_decay_steps (--lr-decay-steps) must be at least 1, got {lr_decay_steps}.")
    if lr_decay_steps is not None and lr_schedule != "seed":
        raise ValueError(f"lr_decay_steps (--lr-decay-steps) belongs to the 'seed' schedule, not {lr_schedule!r} "
                         "(which decays over the run's steps): leave it out or use the seed schedule.")
    if num_classes is not None and int(num_classes) < 2:
        raise ValueError(f"num_classes (--num-classes) must be at least 2 for a conditional model, got {num_classes}; "
                         "leave it out for an unconditional one.")
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}.")
    if label_dropout and not num_classes:
        raise ValueError("label_dropout needs a conditional model: pass num_classes too.")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {lr_schedule!r}. Valid: {', '.join(LR_SCHEDULES)}.")


def load_or_train(profile=None, runs_dir=None, **train_kwargs) -> TrainedRun:
    """The trained run of ``profile`` (default: the active one): loaded if it exists, else trained.

    The run lives in ``runs_dir`` (default ``$DDPM_RUNS_DIR``, else ``./runs``) under
    :func:`.run_name`. It is reused only if it is complete and its configuration (profile, data,
    steps, seed, conditioning, learning-rate schedule, format version) is the one requested; a
    run of the same configuration that stopped early is resumed from its last checkpoint; any
    other run is moved aside to ``NAME.stale-<n>`` (never deleted) and trained again, saying why.
    Two processes asking for the same run at once: the second waits for the first, then loads.
    ``train_kwargs`` go to :func:`train` (``steps``, ``data``, ``num_classes``, ...).
    """
    from ddpm_helpers.engine.data import load_data
    from ddpm_helpers.notebook.pages import is_book_build
    from ddpm_helpers.profiles import get_profile

    profile = get_profile() if profile is None else profile
    runs_dir = run_folder(runs_dir) if runs_dir is not None else default_runs_dir()
    run_dir = runs_dir / run_name(profile, **train_kwargs)
    # a second process (another chapter, a second notebook) waits, then loads what the first trained
    with run_lock(run_dir, wait=True, on_wait=None if is_book_build() else print):
        reason = stale_reason(run_dir)
        resume = False
        if reason is None and (run_dir / CONFIG_FILE).exists():
            data = train_kwargs.get("data")
            data_spec = profile.dataset if data is None else data
            source = load_data(data_spec, profile.image_size, profile.channels, split="train")
            requested = make_config(
                profile, data_spec=data_spec if isinstance(data_spec, str) else source.name,
                data_fingerprint=source.fingerprint, steps=int(train_kwargs.get("steps") or profile.train_steps),
                seed=int(profile.seed if train_kwargs.get("seed") is None else train_kwargs["seed"]),
                num_classes=train_kwargs.get("num_classes"), label_dropout=float(train_kwargs.get("label_dropout") or 0.0),
                lr_schedule=train_kwargs.get("lr_schedule") or "seed")
            if train_kwargs.get("warmup_steps"):
                requested["warmup_steps"] = int(train_kwargs["warmup_steps"])
            if train_kwargs.get("lr_decay_steps") is not None:
                requested["lr_decay_steps"] = int(train_kwargs["lr_decay_steps"])
            if train_kwargs.get("init_from") is not None:
                requested["init_from"] = starting_point(train_kwargs["init_from"])
            stored = read_config(run_dir)
            ignore = ("xla",) if train_kwargs.get("jit_compile") is None else ()
            requested["xla"] = stored.get("xla") if ignore else bool(train_kwargs["jit_compile"])
            diffs = config_differences(stored, requested, ignore=ignore)
            found = latest_checkpoint(run_dir)
            if diffs:
                reason = f"it was trained with a different configuration ({', '.join(diffs)})"
            elif found is None or found[0] < requested["steps"]:
                print(f"Training: {run_dir} is incomplete ({0 if found is None else found[0]} of "
                      f"{requested['steps']} steps).")
                resume = found is not None
            else:
                run = load_run(run_dir)
                print(f"Loaded the trained model {run_dir.name!r} ({run.step:,} steps).")
                return run
        if reason is not None:
            move_aside(run_dir, reason)
        elif not resume:
            print(f"Training {run_dir.name!r} (no trained run of it yet).")
        kwargs = {k: v for k, v in train_kwargs.items() if k != "resume"}
        return train(profile, run_dir, resume=resume, **kwargs)
