"""Training a DDPM (chapter "Training", ``sec-training``): the loop, and the trained run every later chapter loads.

The pieces live in modules of their own, and are re-exported here under the names the book uses:

- :mod:`ddpm_helpers.learning_rates`: Adam's step size (Eq. (eq-seed-lr)) and the EMA (Eq. (eq-ema));
- :mod:`ddpm_helpers.train_step`: the compiled step (Eq. (eq-train-loss)) and its random numbers;
- :mod:`ddpm_helpers.checkpoints`: ``tf.train.Checkpoint`` + ``CheckpointManager``;
- :mod:`ddpm_helpers.runs`: run folders, their configuration and format version, the lock.

This module holds :func:`train` (the loop), :class:`TrainedRun`, :func:`load_run` and
:func:`load_or_train`. Reproducibility: the random numbers of step ``s`` come from keys of
``(seed, s)`` and the data order from ``(seed, epoch)``, so a checkpoint needs only the weights,
the EMA weights, the optimizer and ``s``: a run interrupted and resumed ends with the weights of
one that ran straight through.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from ddpm_helpers.checkpoints import HISTORY_KEYS, RunCheckpoint, checkpoint_path, latest_checkpoint, list_checkpoints
from ddpm_helpers.learning_rates import (LR_SCHEDULES, ConstantLearningRate, ExponentialMovingAverage,
                                         SeedLearningRate, learning_rates, make_learning_rate, seed_learning_rate)
from ddpm_helpers.runs import (CONFIG_FILE, FORMAT_VERSION, RUNS_DIR_ENV_VAR, _atomic_write_bytes, config_differences,
                               config_identity, default_runs_dir, describe_changes, holds_a_run, make_config,
                               move_aside, profile_from_dict, read_config, resume_differences, run_lock, run_name,
                               stale_reason, write_config)
from ddpm_helpers.train_step import (RNG_ALGORITHM, NonFiniteLossError, build_models, draw_step_randomness,
                                     drop_labels, evaluation_loss, make_train_step, measure_step_time, step_keys)

__all__ = [
    "CONFIG_FILE", "FORMAT_VERSION", "LR_SCHEDULES", "RNG_ALGORITHM", "RUNS_DIR_ENV_VAR", "RUNNING_LOSS_DECAY",
    "XLA_MIN_STEPS", "ConstantLearningRate", "ExponentialMovingAverage", "NonFiniteLossError", "RunCheckpoint",
    "SeedLearningRate", "TrainedRun", "_atomic_write_bytes", "build_models", "checkpoint_path",
    "config_differences", "config_identity", "draw_step_randomness", "drop_labels", "evaluation_loss",
    "latest_checkpoint", "learning_rates", "list_checkpoints", "load_or_train", "load_run", "make_config",
    "make_learning_rate", "make_train_step", "measure_step_time", "profile_from_dict", "read_config", "run_name",
    "seed_learning_rate", "step_keys", "train", "write_config",
]

XLA_MIN_STEPS = 1000  # train() compiles with XLA from this many steps on (see its jit_compile)
RUNNING_LOSS_DECAY = 0.98  # smoothing of the loss curve shown by the progress bar and the chapter
PROGRESS_SECONDS = 0.5  # the loop reads the losses back (a host sync) at most this often, and at checkpoints


@dataclasses.dataclass
class TrainedRun:
    """A model trained by :func:`train` (or loaded by :func:`load_run`).

    ``model`` holds the last weights, ``ema_model`` their EMA (use it for sampling);
    ``history`` is a dict of lists, one entry per step: ``step``, ``loss`` (the raw mini-batch
    loss), ``running_loss`` (its exponential moving average, decay 0.98) and ``lr``;
    ``config`` is what ``config.json`` holds; ``step`` the steps done; ``train_seconds`` the
    wall time spent training (all sessions of a resumed run together) and ``steps_per_second``
    the speed measured after the first, compiling, step.
    """

    model: object
    ema_model: object
    schedule: object
    profile: object
    history: dict
    run_dir: Path
    config: dict
    step: int = 0
    train_seconds: float = float("nan")
    steps_per_second: float = float("nan")
    loaded: bool = False
    optimizer: object = None  # the Adam optimizer after training (None for a loaded run)

    @property
    def complete(self) -> bool:
        return self.step >= int(self.config["steps"])

    @property
    def num_classes(self) -> int | None:
        return self.config.get("num_classes")

    @property
    def label_dropout(self) -> float:
        return float(self.config.get("label_dropout", 0.0))

    def __repr__(self) -> str:
        return (f"TrainedRun({str(self.run_dir)!r}, profile={self.profile.name!r}, step={self.step}/"
                f"{self.config['steps']}, {'loaded' if self.loaded else 'trained'})")


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

    from ddpm_helpers.data import find_unreadable_images, unreadable_error

    try:
        return next(batches)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
        bad = find_unreadable_images(source.files) if source.files else []
        if bad:
            raise unreadable_error(source.name[len("folder:"):], bad, source.count) from error
        raise


def train(profile=None, run_dir=None, *, steps: int | None = None, resume: bool = False, data=None,
          seed: int | None = None, progress: bool = True, num_classes: int | None = None,
          label_dropout: float = 0.0, lr_schedule: str = "seed", learning_rate: float | None = None,
          checkpoint_every: int | None = None, keep_checkpoints: int = 2, jit_compile: bool | None = None,
          loss_fn=None, on_step=None) -> TrainedRun:
    """Train the profile's U-Net as a DDPM and write checkpoints and ``config.json`` to ``run_dir``.

    - ``steps`` (default ``profile.train_steps``), ``seed`` (default ``profile.seed``), ``data``
      (default ``profile.dataset``; any spec :func:`ddpm_helpers.data.load_data` accepts),
      ``learning_rate`` (default ``profile.learning_rate``), the base of ``lr_schedule`` (a name
      for :func:`make_learning_rate`).
    - ``num_classes``: train a class-conditional model (``model([x, t, label])``) on the data's
      labels; ``label_dropout`` replaces a label by the null label ``num_classes`` with that
      probability (for classifier-free guidance).
    - A checkpoint is written every ``checkpoint_every`` (default ``profile.checkpoint_every``)
      steps and at the end; the newest ``keep_checkpoints`` are kept.
    - ``resume=True`` continues from the newest checkpoint of ``run_dir`` and ends with the weights
      an uninterrupted run would have. It may change the learning rate, the steps, the seed of the
      batches and noise and XLA (a note says what changed), not the model, data or schedule.
      Without it, a run already in ``run_dir`` is moved aside to ``run_dir.stale-<n>``.
    - A NaN or infinite loss or gradient stops training with :class:`NonFiniteLossError` naming the
      step and the last good checkpoint: that step's update is not applied and nothing is saved
      after it. ``loss_fn`` overrides the profile's loss (tests use it), ``on_step(step, loss)``
      is called after every step (which then reads every loss back at once: slower).
    - ``jit_compile``: compile the step with XLA (on the book's small CPU networks this halves the
      time per step, but compiles longer). Default: the resumed run's setting, else XLA for runs
      of at least ``XLA_MIN_STEPS`` steps.
    """
    import keras
    import tensorflow as tf

    from ddpm_helpers.data import iterate_batches, load_data
    from ddpm_helpers.diffusion import diffusion_loss
    from ddpm_helpers.pages import ProgressBar
    from ddpm_helpers.profiles import get_profile
    from ddpm_helpers.schedules import make_schedule

    profile = get_profile() if profile is None else profile
    profile = profile if learning_rate is None else profile.replace(learning_rate=float(learning_rate))
    run_dir = Path(run_dir) if run_dir is not None else default_runs_dir() / run_name(profile)
    steps = int(profile.train_steps if steps is None else steps)
    seed = int(profile.seed if seed is None else seed)
    checkpoint_every = int(checkpoint_every or profile.checkpoint_every)
    _check_settings(steps, num_classes, label_dropout, lr_schedule)
    data_spec = profile.dataset if data is None else data
    source = load_data(data_spec, profile.image_size, profile.channels, split="train")
    if num_classes and source.num_classes is None:
        raise ValueError(f"A conditional model (num_classes={num_classes}) needs labelled data; {source.name!r} has none.")
    if num_classes and source.num_classes is not None and source.num_classes > num_classes:
        raise ValueError(f"The data has {source.num_classes} classes but num_classes={num_classes}.")
    config = make_config(profile, data_spec=data_spec if isinstance(data_spec, str) else source.name,
                         data_fingerprint=source.fingerprint, steps=steps, seed=seed, num_classes=num_classes,
                         label_dropout=label_dropout, lr_schedule=lr_schedule, xla=jit_compile)

    keras.utils.set_random_seed(seed)  # the initial weights (and, with make_pipeline's seeds, the data order)
    model, ema_model = build_models(profile, num_classes)
    rate = make_learning_rate(lr_schedule, profile.learning_rate, steps)
    optimizer = keras.optimizers.Adam(rate)
    optimizer.build(model.trainable_variables)
    ema = ExponentialMovingAverage(model, ema_model, profile.ema_decay)
    ema.reset()
    start = _start_or_resume(run_dir, config, resume, steps)
    checkpoint = RunCheckpoint(run_dir, model, ema_model, optimizer, seed=seed, keep=keep_checkpoints)
    history, train_seconds = {key: [] for key in HISTORY_KEYS}, 0.0
    if start:
        _, history, meta = checkpoint.restore(start)
        checkpoint.seed.assign(seed)  # the seed that keys the steps from here on
        train_seconds = float(meta.get("train_seconds") or 0.0)
    write_config(run_dir, config)

    schedule = make_schedule(profile.schedule, profile.timesteps)
    train_step = make_train_step(model, optimizer, schedule, loss_fn or diffusion_loss(profile.loss), ema=ema,
                                 seed=seed, num_classes=num_classes, label_dropout=label_dropout,
                                 jit_compile=config["xla"])
    batches = iterate_batches(source, profile.batch_size, seed=seed, start_step=start)
    steps_per_epoch = source.steps_per_epoch(profile.batch_size)
    curve = _History(history, learning_rates(rate, start, steps), start)
    last_saved = start or None
    bar, values = None, []
    session_start, timed_start, last_flush = time.perf_counter(), None, 0.0

    for step in range(start + 1, steps + 1):
        images, labels = _next_batch(batches, source)
        curve.pending.append(train_step(images, labels, tf.constant(step - 1, tf.int64)))
        if timed_start is None:  # the first step traced and compiled the graph
            curve.pending[-1].numpy()
            timed_start = time.perf_counter()
            bar = ProgressBar(steps, label=f"training {run_dir.name}: compiled the step in "
                              f"{timed_start - session_start:.1f} s", enabled=progress,
                              stateful_metrics=["loss", "running_loss", "lr"])
        saving = step % checkpoint_every == 0 or step == steps
        if saving or on_step is not None or (progress and time.perf_counter() - last_flush > PROGRESS_SECONDS):
            if int(train_step.bad_step):
                raise _non_finite_error(train_step, steps, run_dir, last_saved)
            values, last_flush = curve.flush(step), time.perf_counter()
            bar.update(step, values)
            if on_step is not None:
                on_step(step, curve.history["loss"][-1])
        if saving:
            timed = step - start - 1
            seconds = time.perf_counter() - timed_start
            epoch, batch = divmod(step, steps_per_epoch)
            meta = {"seed": seed, "epoch": epoch, "batch_in_epoch": batch, "steps_per_epoch": steps_per_epoch,
                    "train_seconds": train_seconds + time.perf_counter() - session_start,
                    "steps_per_second": timed / seconds if timed else None}
            checkpoint.save(step, curve.history, meta)
            last_saved = step

    final = meta if start < steps else {"train_seconds": train_seconds, "steps_per_second": None}
    return TrainedRun(model=model, ema_model=ema_model, schedule=schedule, profile=profile, history=curve.history,
                      run_dir=run_dir, config=config, step=max(start, steps), train_seconds=final["train_seconds"],
                      steps_per_second=final["steps_per_second"] or float("nan"), optimizer=optimizer)


def _check_settings(steps, num_classes, label_dropout, lr_schedule):
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}.")
    if label_dropout and not num_classes:
        raise ValueError("label_dropout needs a conditional model: pass num_classes too.")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {lr_schedule!r}. Valid: {', '.join(LR_SCHEDULES)}.")


def _start_or_resume(run_dir: Path, config: dict, resume: bool, steps: int):
    """The step to start from; completes ``config`` (XLA, changes) and clears or checks ``run_dir``."""
    found = None
    if resume:
        problem = stale_reason(run_dir)
        if problem:
            raise ValueError(f"Cannot resume {run_dir}: {problem}. Train it afresh without --resume / resume=True "
                             f"(the old run is then moved aside, not deleted).")
        found = latest_checkpoint(run_dir)
        if found is None:
            print(f"No checkpoint in {run_dir}: starting from step 0.")
    if found is None:
        if config["xla"] is None:
            config["xla"] = steps >= XLA_MIN_STEPS
        if holds_a_run(run_dir):
            move_aside(run_dir, "a new run starts in its place")
        run_dir.mkdir(parents=True, exist_ok=True)
        return 0
    stored = read_config(run_dir)
    if config["xla"] is None:
        config["xla"] = stored.get("xla")
    refused, changed = resume_differences(stored, config)
    if refused:
        raise ValueError(
            f"Cannot resume {run_dir}: it was trained with a different model, data or schedule ({', '.join(refused)}). "
            "Resume with those settings as they were, or train afresh (without --resume) into another folder.")
    if found[0] > steps:
        raise ValueError(f"{run_dir} already holds {found[0]} steps, more than the {steps} requested.")
    config["changes"] = list(stored.get("changes", [])) + ([{"step": found[0], **changed}] if changed else [])
    note = f" with changed training settings: {describe_changes(changed)}" if changed else ""
    if "xla" in changed:
        note += " (XLA rounds differently: from here on the run matches neither setting's uninterrupted run exactly)"
    print(f"Resuming {run_dir} at step {found[0]} of {steps}{note}.")
    return found[0]


def load_run(run_dir, *, checkpoint=None) -> TrainedRun:
    """The run in ``run_dir``: its ``config.json`` and newest checkpoint, or the one of step
    ``checkpoint`` (a step number, or a name such as ``"ckpt-500"``).

    Raises ``FileNotFoundError`` when the folder holds no run or no such checkpoint, listing
    those it holds, and ``ValueError`` for a run of an older format.
    """
    from ddpm_helpers.schedules import make_schedule

    run_dir = Path(run_dir)
    problem = stale_reason(run_dir)
    if problem:
        raise ValueError(f"Cannot load {run_dir}: {problem}. Train it again (load_or_train moves it aside).")
    config = read_config(run_dir)
    available = list_checkpoints(run_dir)
    if not available:
        raise FileNotFoundError(
            f"{run_dir} has a {CONFIG_FILE} but no checkpoint: training never reached its first checkpoint. "
            f"Continue it with `python -m ddpm_helpers train --out {run_dir} --resume` or train(..., resume=True).")
    step = available[-1][0] if checkpoint is None else _checkpoint_step(checkpoint, available, run_dir)
    profile = profile_from_dict(config["profile"])
    model, ema_model = build_models(profile, config.get("num_classes"))
    _, history, meta = RunCheckpoint(run_dir, model, ema_model, keep=0).restore(step)
    return TrainedRun(model=model, ema_model=ema_model, schedule=make_schedule(profile.schedule, profile.timesteps),
                      profile=profile, history=history, run_dir=run_dir, config=config, step=step,
                      train_seconds=float(meta.get("train_seconds") or float("nan")),
                      steps_per_second=float(meta.get("steps_per_second") or float("nan")), loaded=True)


def _checkpoint_step(checkpoint, available, run_dir) -> int:
    steps = {step: path.name for step, path in available}
    text = Path(str(checkpoint)).name
    number = text.rsplit("-", 1)[-1].split(".", 1)[0]
    if number.isdigit() and int(number) in steps and (text == number or text.startswith("ckpt-")):
        return int(number)
    raise FileNotFoundError(f"{run_dir} has no checkpoint {checkpoint!r}; it holds "
                            f"{', '.join(steps.values())} (pass one of those names or its step number).")


def load_or_train(profile=None, runs_dir=None, **train_kwargs) -> TrainedRun:
    """The trained run of ``profile`` (default: the active one): loaded if it exists, else trained.

    The run lives in ``runs_dir`` (default ``$DDPM_RUNS_DIR``, else ``./runs``) under
    :func:`run_name`. It is reused only if it is complete and its configuration (profile, data,
    steps, seed, conditioning, learning-rate schedule, format version) is the one requested; a
    run of the same configuration that stopped early is resumed from its last checkpoint; any
    other run is moved aside to ``NAME.stale-<n>`` (never deleted) and trained again, saying why.
    ``train_kwargs`` go to :func:`train` (``steps``, ``data``, ``num_classes``, ...).
    """
    from ddpm_helpers.data import load_data
    from ddpm_helpers.profiles import get_profile

    profile = get_profile() if profile is None else profile
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    name = run_name(profile, **train_kwargs)
    run_dir = runs_dir / name
    with run_lock(runs_dir, name):
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
                num_classes=train_kwargs.get("num_classes"), label_dropout=float(train_kwargs.get("label_dropout", 0.0)),
                lr_schedule=train_kwargs.get("lr_schedule", "seed"))
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
                speed = f", {run.steps_per_second:.1f} steps/s" if math.isfinite(run.steps_per_second) else ""
                print(f"Loaded {run_dir}: {run.step} steps, trained in {run.train_seconds:.0f} s{speed}.")
                return run
        if reason is not None:
            move_aside(run_dir, reason)
        elif not resume:
            print(f"Training: no run in {run_dir}.")
        kwargs = {k: v for k, v in train_kwargs.items() if k != "resume"}
        return train(profile, run_dir, resume=resume, **kwargs)
