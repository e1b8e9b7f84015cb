"""Training a DDPM (chapter "Training", ``sec-training``): loss, learning rate, EMA, checkpoints, resume.

The pieces, in the order the chapter builds them:

- :class:`SeedLearningRate` and :func:`make_learning_rate`: Adam's step size over training
  (Eq. (eq-seed-lr)).
- :class:`ExponentialMovingAverage`: the averaged weights that sampling uses (Eq. (eq-ema)).
- :func:`make_train_step`: one compiled (``tf.function``) step: sample t and the noise, form x_t
  with ``q_sample``, predict the noise, take the loss (Huber or MSE, Eq. (eq-train-loss)), apply
  the gradients and update the EMA.
- :func:`train`: the loop, with a progress bar, a loss history, atomic checkpoints and an exact
  resume; :func:`load_run` and :func:`load_or_train`, which every later chapter calls to get the
  trained model of the active profile.

Reproducibility: the random numbers of step ``s`` (time steps, noise, label dropout) come from
stateless generators keyed by ``(seed, s)``, and the data order from ``(seed, epoch)`` (see
:func:`ddpm_helpers.data.iterate_batches`). A checkpoint therefore only needs the weights, the EMA
weights, the optimizer state and ``s``: a run interrupted and resumed ends with the same weights
as one that ran straight through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG_FILE = "config.json"
CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{8})\.npz$")
CONFIG_FORMAT = 1
LR_SCHEDULES = ("seed", "constant", "cosine", "warmup_cosine")
RUNS_DIR_ENV_VAR = "DDPM_RUNS_DIR"
XLA_MIN_STEPS = 1000  # train() compiles with XLA from this many steps on (see its jit_compile)
RUNNING_LOSS_DECAY = 0.98  # smoothing of the loss curve shown by the progress bar and the chapter
# Profile fields that do not change what training computes (they are not compared when reusing a run).
NON_TRAINING_FIELDS = ("description", "num_eval_samples", "checkpoint_every")
# Source files whose code decides what a trained run contains; a change retrains (see code_fingerprint).
CODE_MODULES = ("unet", "schedules", "diffusion", "training")


class NonFiniteLossError(FloatingPointError):
    """Training met a NaN or infinite loss; the message names the step and the last good checkpoint."""


# --------------------------------------------------------------------------------------------
# Learning rate
# --------------------------------------------------------------------------------------------

def _keras():
    import keras

    return keras


def _schedule_base():
    return _keras().optimizers.schedules.LearningRateSchedule


class SeedLearningRate(_schedule_base()):
    """The seed chapter's schedule: ``lr(step) = base_lr * decay_steps / (step + decay_steps)``.

    With ``decay_steps = 100000`` (the seed's value) the rate halves after 100,000 steps; over the
    seed's 63,310 steps it falls to 61% of ``base_lr``. Chapter "Training", Eq. (eq-seed-lr).
    """

    def __init__(self, base_lr: float = 1e-4, decay_steps: int = 100_000):
        if not base_lr > 0 or not decay_steps > 0:
            raise ValueError(f"base_lr and decay_steps must be positive, got {base_lr} and {decay_steps}.")
        self.base_lr = float(base_lr)
        self.decay_steps = float(decay_steps)

    def __call__(self, step):
        import keras

        step = keras.ops.cast(step, "float32")
        return self.base_lr * self.decay_steps / (step + self.decay_steps)

    def get_config(self):
        return {"base_lr": self.base_lr, "decay_steps": self.decay_steps}


class ConstantLearningRate(_schedule_base()):
    """``lr(step) = base_lr`` for every step."""

    def __init__(self, base_lr: float):
        self.base_lr = float(base_lr)

    def __call__(self, step):
        import keras

        return keras.ops.cast(self.base_lr, "float32") + 0.0 * keras.ops.cast(step, "float32")

    def get_config(self):
        return {"base_lr": self.base_lr}


def make_learning_rate(name: str, base_lr: float, total_steps: int):
    """A Keras ``LearningRateSchedule`` by name.

    - ``"seed"``: :class:`SeedLearningRate` (the seed chapter's; does not depend on ``total_steps``),
    - ``"constant"``: ``base_lr`` throughout,
    - ``"cosine"``: cosine decay from ``base_lr`` to 0 over ``total_steps``,
    - ``"warmup_cosine"``: linear warm-up over the first 5% of the steps, then cosine decay to 0.

    Raises ``ValueError`` for any other name.
    """
    keras = _keras()
    if not base_lr > 0:
        raise ValueError(f"base_lr must be positive, got {base_lr}.")
    total_steps = int(total_steps)
    if name == "seed":
        return SeedLearningRate(base_lr)
    if name == "constant":
        return ConstantLearningRate(base_lr)
    if total_steps < 1:
        raise ValueError(f"The {name!r} schedule needs total_steps >= 1, got {total_steps}.")
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(base_lr, decay_steps=total_steps, alpha=0.0)
    if name == "warmup_cosine":
        warmup = max(1, total_steps // 20)
        return keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=max(1, total_steps - warmup), alpha=0.0, warmup_target=base_lr, warmup_steps=warmup
        )
    raise ValueError(f"Unknown learning-rate schedule {name!r}. Valid: {', '.join(LR_SCHEDULES)}.")


# --------------------------------------------------------------------------------------------
# EMA of the weights
# --------------------------------------------------------------------------------------------

class ExponentialMovingAverage:
    """Keeps ``ema_model``'s weights an exponential moving average of ``model``'s.

    After every optimizer step, for each trainable weight: ``ema <- decay * ema + (1 - decay) * w``
    (chapter "Training", Eq. (eq-ema)); weights that are not trained are copied. ``ema_model``
    must have the same architecture; :meth:`reset` copies the current weights into it.
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
        for average, weight in zip(self.ema_model.trainable_weights, self.model.trainable_weights):
            average.assign(decay * average + (1.0 - decay) * weight)
        for average, weight in zip(self.ema_model.non_trainable_weights, self.model.non_trainable_weights):
            average.assign(weight)


# --------------------------------------------------------------------------------------------
# Randomness of a step
# --------------------------------------------------------------------------------------------

def step_keys(seed: int, step, count: int = 3):
    """``count`` independent stateless-RNG keys (int64, shape (count, 2)) for training step ``step``.

    Keyed by ``(seed, step)`` only, so a resumed run draws exactly what an uninterrupted run drew.
    """
    import tensorflow as tf

    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_split(key, num=count)


def draw_step_randomness(seed: int, step, batch_size: int, image_shape, timesteps: int):
    """The time indices t (int32, (B,)) and noise ((B, H, W, C)) of training step ``step``."""
    import tensorflow as tf

    keys = step_keys(seed, step)
    t = tf.random.stateless_uniform([batch_size], seed=keys[0], minval=0, maxval=timesteps, dtype=tf.int32)
    noise = tf.random.stateless_normal([batch_size, *image_shape], seed=keys[1])
    return t, noise, keys[2]


def drop_labels(labels, key, num_classes: int, label_dropout: float):
    """Replace each label by the null label ``num_classes`` with probability ``label_dropout``.

    Trains the unconditional model inside the conditional one, which classifier-free guidance
    needs (Ho & Salimans 2022).
    """
    import tensorflow as tf

    if label_dropout <= 0.0:
        return labels
    keep = tf.random.stateless_uniform(tf.shape(labels), seed=key) >= label_dropout
    return tf.where(keep, labels, tf.fill(tf.shape(labels), tf.constant(num_classes, labels.dtype)))


def make_train_step(model, optimizer, schedule, loss_fn, *, ema: ExponentialMovingAverage | None = None,
                    seed: int = 0, num_classes: int | None = None, label_dropout: float = 0.0,
                    jit_compile: bool = False):
    """The compiled training step ``train_step(images, labels, step) -> loss``.

    1. draw t ~ U{0, ..., T-1} and noise ~ N(0, I) from keys of ``(seed, step)``;
    2. x_t = q_sample(x_0, t, noise) (chapter "Forward and reverse process", Eq. (eq-q-xt-x0));
    3. predict the noise with ``model([x_t, t])`` (or ``model([x_t, t, label])`` when conditional,
       labels dropped to the null label with probability ``label_dropout``);
    4. loss = ``loss_fn(noise, predicted)`` (Eq. (eq-train-loss)); gradients; Adam update;
    5. EMA update of the averaged weights (Eq. (eq-ema)).
    """
    import tensorflow as tf

    from ddpm_helpers.diffusion import q_sample

    timesteps = schedule.timesteps
    variables = model.trainable_variables

    @tf.function(jit_compile=jit_compile)
    def train_step(images, labels, step):
        batch_size = tf.shape(images)[0]
        keys = step_keys(seed, step)
        t = tf.random.stateless_uniform([batch_size], seed=keys[0], minval=0, maxval=timesteps, dtype=tf.int32)
        noise = tf.random.stateless_normal(tf.shape(images), seed=keys[1])
        x_t = q_sample(schedule, images, t, noise)
        inputs = [x_t, t]
        if num_classes:
            inputs.append(drop_labels(labels, keys[2], num_classes, label_dropout))
        with tf.GradientTape() as tape:
            predicted = model(inputs, training=True)
            loss = loss_fn(noise, predicted)
        gradients = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))
        if ema is not None:
            ema.update()
        return loss

    return train_step


def evaluation_loss(model, schedule, images, *, loss: str = "mse", labels=None, num_classes: int | None = None,
                    seed: int = 1234, batch_size: int = 256, repeats: int = 1) -> float:
    """The loss of ``model`` on ``images`` with fixed t and noise (keyed by ``seed``): a noise-free yardstick.

    Unlike the training loss, whose t and noise change every step, this number moves only when
    the model does, so it can compare models (raw vs EMA weights, before vs after training).
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
    from ddpm_helpers.schedules import make_schedule

    batch_size = int(batch_size or profile.batch_size)
    keras.utils.set_random_seed(seed)
    model, ema_model = build_models(profile)
    optimizer = _make_optimizer(profile, "seed", profile.train_steps)
    optimizer.build(model.trainable_variables)
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


# --------------------------------------------------------------------------------------------
# Configuration of a run
# --------------------------------------------------------------------------------------------

def code_fingerprint() -> str:
    """A hash of the modules that decide what a trained run contains (model, schedule, loss, loop)."""
    import importlib

    digest = hashlib.sha256()
    for name in CODE_MODULES:
        module = importlib.import_module(f"ddpm_helpers.{name}")
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def make_config(profile, *, data_spec: str, data_fingerprint: str, steps: int, seed: int,
                num_classes: int | None, label_dropout: float, lr_schedule: str) -> dict:
    """The JSON-able description of a run; runs whose ``identity`` parts agree are interchangeable."""
    import keras
    import tensorflow as tf

    from ddpm_helpers import __version__

    return {
        "format": CONFIG_FORMAT,
        "profile": _plain(profile.to_dict()),
        "data": data_spec,
        "data_fingerprint": data_fingerprint,
        "steps": int(steps),
        "seed": int(seed),
        "num_classes": None if not num_classes else int(num_classes),
        "label_dropout": float(label_dropout),
        "lr_schedule": lr_schedule,
        "code": code_fingerprint(),
        "versions": {"ddpm_helpers": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
                     "python": sys.version.split()[0]},
    }


def config_identity(config: dict) -> dict:
    """The parts of a config that decide the trained weights (versions and descriptions left out)."""
    identity = {k: v for k, v in config.items() if k not in ("versions",)}
    identity["profile"] = {k: v for k, v in config["profile"].items() if k not in NON_TRAINING_FIELDS}
    return identity


def config_differences(stored: dict, requested: dict, ignore=()) -> list[str]:
    """Names of the identity fields that differ (``profile.widths``, ``steps``, ``code``, ...)."""
    a, b = config_identity(stored), config_identity(requested)
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in ignore:
            continue
        if key == "profile":
            pa, pb = a.get(key, {}), b.get(key, {})
            diffs += [f"profile.{k}" for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]
        elif a.get(key) != b.get(key):
            diffs.append(key)
    return diffs


def profile_from_dict(values: dict):
    """Rebuild a :class:`~ddpm_helpers.profiles.Profile` from ``Profile.to_dict()`` (e.g. read from JSON)."""
    from ddpm_helpers.profiles import Profile

    fields = {f.name for f in dataclasses.fields(Profile)}
    missing = sorted(f.name for f in dataclasses.fields(Profile)
                     if f.name not in values and f.default is dataclasses.MISSING)
    if missing:
        raise ValueError(f"The stored profile lacks the field(s) {', '.join(missing)}; retrain this run.")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in fields}
    return Profile(**kwargs)


def _atomic_write_bytes(path: Path, payload: bytes):
    """Write ``payload`` to ``path`` so that readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def write_config(run_dir: Path, config: dict):
    _atomic_write_bytes(Path(run_dir) / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())


def read_config(run_dir) -> dict:
    """``run_dir/config.json``, or ``FileNotFoundError`` saying how to create it."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"No trained run in {str(run_dir)!r}: {CONFIG_FILE} is missing. Train one with "
            f"training.load_or_train(profile) or `python -m ddpm_helpers train --out {run_dir}`."
        )
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def checkpoint_path(run_dir, step: int) -> Path:
    return Path(run_dir) / f"ckpt-{int(step):08d}.npz"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """``(step, path)`` of every checkpoint in ``run_dir``, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for path in run_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(run_dir, step: int, model, ema_model, optimizer, history: dict, meta: dict,
                    keep: int = 2) -> Path:
    """Write ``ckpt-<step>.npz`` atomically (temporary file, fsync, rename) and keep the newest ``keep``.

    It holds the model's weights, the EMA weights, the optimizer's variables (Adam's moments and
    its step counter), the loss history and ``meta`` (the step; the data position and the random
    numbers follow from it and the run's seed).
    """
    arrays = {}
    for prefix, variables in (("model", model.weights), ("ema", ema_model.weights), ("optimizer", optimizer.variables)):
        for index, variable in enumerate(variables):
            arrays[f"{prefix}/{index:04d}"] = np.asarray(variable.numpy())
    for key, values in history.items():
        arrays[f"history/{key}"] = np.asarray(values, dtype=np.float64)
    arrays["meta"] = np.array(json.dumps({**meta, "step": int(step)}))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path = checkpoint_path(run_dir, step)
    _atomic_write_bytes(path, buffer.getvalue())
    for _, old in list_checkpoints(run_dir)[:-keep] if keep else []:
        with contextlib.suppress(OSError):
            old.unlink()
    return path


def read_checkpoint(path) -> dict:
    """The arrays and meta data of one checkpoint file (see :func:`save_checkpoint`)."""
    with np.load(path, allow_pickle=False) as file:
        contents = {key: file[key] for key in file.files}
    meta = json.loads(str(contents.pop("meta")))
    groups = {"model": [], "ema": [], "optimizer": [], "history": {}}
    for key in sorted(contents):
        prefix, name = key.split("/", 1)
        if prefix == "history":
            groups["history"][name] = contents[key].tolist()
        else:
            groups[prefix].append(contents[key])
    groups["meta"] = meta
    return groups


def _assign(variables, arrays, what: str, path):
    if len(variables) != len(arrays):
        raise ValueError(f"{path}: holds {len(arrays)} {what} arrays, the model has {len(variables)}; "
                         "the architecture changed since it was written: retrain.")
    for variable, array in zip(variables, arrays):
        if tuple(variable.shape) != tuple(array.shape):
            raise ValueError(f"{path}: a {what} array has shape {array.shape}, the model expects "
                             f"{tuple(variable.shape)}; the architecture changed: retrain.")
        variable.assign(array)


def restore_checkpoint(path, model, ema_model, optimizer=None) -> dict:
    """Load a checkpoint into the models (and optimizer); returns its ``meta`` and ``history``."""
    contents = read_checkpoint(path)
    _assign(model.weights, contents["model"], "model weight", path)
    _assign(ema_model.weights, contents["ema"], "EMA weight", path)
    if optimizer is not None:
        _assign(optimizer.variables, contents["optimizer"], "optimizer", path)
    return contents


def latest_checkpoint(run_dir) -> tuple[int, Path] | None:
    """The newest checkpoint that can be read (an unreadable newest one is skipped with a warning)."""
    for step, path in reversed(list_checkpoints(run_dir)):
        try:
            with np.load(path, allow_pickle=False) as file:
                json.loads(str(file["meta"]))
            return step, path
        except Exception as error:  # a truncated copy, a disk error, ...
            print(f"warning: skipping unreadable checkpoint {path} ({type(error).__name__}: {error})",
                  file=sys.stderr)
    return None


# --------------------------------------------------------------------------------------------
# The trained run
# --------------------------------------------------------------------------------------------

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


def build_models(profile, num_classes: int | None = None):
    """The U-Net of ``profile`` and a second one for the EMA weights."""
    from ddpm_helpers.unet import build_unet_for_profile

    model = build_unet_for_profile(profile, num_classes=num_classes)
    ema_model = build_unet_for_profile(profile, num_classes=num_classes)
    return model, ema_model


def _make_optimizer(profile, lr_schedule: str, total_steps: int):
    keras = _keras()
    return keras.optimizers.Adam(learning_rate=make_learning_rate(lr_schedule, profile.learning_rate, total_steps))


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


class _Progress:
    """A Keras progress bar, started after the first (compiling) step so that its speed and ETA are right.

    It redraws at most every 0.5 s in a terminal and every 10 s elsewhere (fewer lines in a built page).
    """

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.bar = total, enabled, None

    def update(self, step: int, loss: float, running: float, lr: float, compile_seconds: float | None = None):
        if not self.enabled:
            return
        if self.bar is None:
            import keras

            if compile_seconds is not None:
                print(f"step {step}: compiled the training step in {compile_seconds:.1f} s")
            interactive = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
            self.bar = keras.utils.Progbar(self.total, stateful_metrics=["loss", "running_loss", "lr"],
                                           unit_name="step", interval=0.5 if interactive else 10.0)
            self.bar.update(step)
            if step < self.total:
                return
        self.bar.update(step, [("loss", loss), ("running_loss", running), ("lr", lr)], finalize=step == self.total)


def _default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV_VAR) or "runs")


def train(profile=None, run_dir=None, *, steps: int | None = None, resume: bool = False, data=None,
          seed: int | None = None, progress: bool = True, num_classes: int | None = None,
          label_dropout: float = 0.0, lr_schedule: str = "seed", checkpoint_every: int | None = None,
          keep_checkpoints: int = 2, jit_compile: bool | None = None, loss_fn=None, on_step=None) -> TrainedRun:
    """Train the profile's U-Net as a DDPM and write checkpoints and ``config.json`` to ``run_dir``.

    - ``steps`` (default ``profile.train_steps``), ``seed`` (default ``profile.seed``), ``data``
      (default ``profile.dataset``; any spec :func:`ddpm_helpers.data.load_data` accepts).
    - ``num_classes``: train a class-conditional model (``model([x, t, label])``) on the data's
      labels; ``label_dropout`` replaces a label by the null label ``num_classes`` with that
      probability (for classifier-free guidance).
    - ``lr_schedule``: a name for :func:`make_learning_rate` with base ``profile.learning_rate``.
    - A checkpoint is written every ``checkpoint_every`` (default ``profile.checkpoint_every``)
      steps and at the end, atomically; the newest ``keep_checkpoints`` are kept.
    - ``resume=True`` continues from the newest checkpoint of ``run_dir`` (whose config must
      match; ``steps`` may be larger) and ends with the weights an uninterrupted run would have.
      Without it, an existing run in ``run_dir`` is replaced.
    - A NaN or infinite loss raises :class:`NonFiniteLossError` naming the step; the last
      checkpoint stays as it was. ``loss_fn`` overrides the profile's loss (tests use it),
      ``on_step(step, loss)`` is called after every step.
    - ``jit_compile``: compile the step with XLA. On the book's small CPU networks this halves
      the time per step but makes the first compile longer; the default (None) uses XLA for runs
      of at least ``XLA_MIN_STEPS`` steps.
    """
    import keras
    import tensorflow as tf

    from ddpm_helpers.data import find_unreadable_images, iterate_batches, load_data, unreadable_error
    from ddpm_helpers.diffusion import diffusion_loss
    from ddpm_helpers.profiles import get_profile
    from ddpm_helpers.schedules import make_schedule

    profile = get_profile() if profile is None else profile
    run_dir = Path(run_dir) if run_dir is not None else _default_runs_dir() / run_name(profile)
    steps = int(profile.train_steps if steps is None else steps)
    seed = int(profile.seed if seed is None else seed)
    checkpoint_every = int(checkpoint_every or profile.checkpoint_every)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}.")
    if not 0.0 <= label_dropout < 1.0:
        raise ValueError(f"label_dropout must lie in [0, 1), got {label_dropout}.")
    if label_dropout and not num_classes:
        raise ValueError("label_dropout needs a conditional model: pass num_classes too.")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {lr_schedule!r}. Valid: {', '.join(LR_SCHEDULES)}.")

    data_spec = profile.dataset if data is None else data
    source = load_data(data_spec, profile.image_size, profile.channels, split="train")
    if num_classes and source.num_classes is None:
        raise ValueError(f"A conditional model (num_classes={num_classes}) needs labelled data; {source.name!r} has none.")
    if num_classes and source.num_classes is not None and source.num_classes > num_classes:
        raise ValueError(f"The data has {source.num_classes} classes but num_classes={num_classes}.")
    config = make_config(profile, data_spec=data_spec if isinstance(data_spec, str) else source.name,
                         data_fingerprint=source.fingerprint, steps=steps, seed=seed,
                         num_classes=num_classes, label_dropout=label_dropout, lr_schedule=lr_schedule)

    schedule = make_schedule(profile.schedule, profile.timesteps)
    # Fixes the initial weights (and, with the explicit seeds of make_pipeline, the data order).
    keras.utils.set_random_seed(seed)
    model, ema_model = build_models(profile, num_classes)
    optimizer = _make_optimizer(profile, lr_schedule, steps)
    optimizer.build(model.trainable_variables)
    ema = ExponentialMovingAverage(model, ema_model, profile.ema_decay)
    ema.reset()
    history = {"step": [], "loss": [], "running_loss": [], "lr": []}
    start, train_seconds = 0, 0.0

    found = latest_checkpoint(run_dir) if resume else None
    if resume and found is None:
        print(f"No checkpoint in {run_dir}: starting from step 0.")
    if found is not None:
        stored = read_config(run_dir)
        ignore = ("steps",) if lr_schedule in ("seed", "constant") else ()
        diffs = config_differences(stored, config, ignore=ignore)
        if diffs:
            raise ValueError(
                f"Cannot resume {run_dir}: it was trained with a different configuration ({', '.join(diffs)}). "
                "Resume with the same settings, or train afresh (without resume) into another folder."
            )
        contents = restore_checkpoint(found[1], model, ema_model, optimizer)
        start = found[0]
        if start > steps:
            raise ValueError(f"{run_dir} already holds {start} steps, more than the {steps} requested.")
        history = {key: list(contents["history"].get(key, [])) for key in history}
        train_seconds = float(contents["meta"].get("train_seconds", 0.0))
        print(f"Resuming {run_dir} at step {start} of {steps}.")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        for _, old in list_checkpoints(run_dir):
            old.unlink()
    write_config(run_dir, config)

    loss_fn = loss_fn or diffusion_loss(profile.loss)
    if jit_compile is None:
        jit_compile = steps >= XLA_MIN_STEPS
    train_step = make_train_step(model, optimizer, schedule, loss_fn, ema=ema, seed=seed,
                                 num_classes=num_classes, label_dropout=label_dropout, jit_compile=jit_compile)
    batches = iterate_batches(source, profile.batch_size, seed=seed, start_step=start)
    steps_per_epoch = source.steps_per_epoch(profile.batch_size)
    running = history["running_loss"][-1] if history["running_loss"] else None
    last_saved = start if found is not None else None
    bar = _Progress(steps, progress)
    # Step s (counted from 1) is the optimizer's iteration s - 1, which uses the rate schedule(s - 1).
    rates = learning_rates(make_learning_rate(lr_schedule, profile.learning_rate, steps), start, steps)
    timed_start, timed_steps, compile_seconds = None, 0, None
    session_start = time.perf_counter()

    def meta(step):
        epoch, batch = divmod(step, steps_per_epoch)
        return {"seed": seed, "epoch": epoch, "batch_in_epoch": batch, "steps_per_epoch": steps_per_epoch,
                "train_seconds": train_seconds + time.perf_counter() - session_start,
                "steps_per_second": (timed_steps / (time.perf_counter() - timed_start)) if timed_steps else None}

    step = start
    while step < steps:
        try:
            images, labels = next(batches)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            if source.files:
                bad = find_unreadable_images(source.files)
                if bad:
                    raise unreadable_error(source.name[len("folder:"):], bad, source.count) from error
            raise
        step_began = time.perf_counter()
        loss = float(train_step(images, labels, tf.constant(step, tf.int64)))
        if not math.isfinite(loss):
            kept = (f"the last good checkpoint, {checkpoint_path(run_dir, last_saved)} (step {last_saved}), is kept"
                    if last_saved is not None else "no checkpoint had been written yet")
            raise NonFiniteLossError(
                f"Training stopped: the loss became {loss} at step {step + 1} of {steps} (run {run_dir}); "
                f"{kept}. Lower the learning rate or check the data for NaNs, then train again "
                "(resume=True / --resume continues from the checkpoint)."
            )
        step += 1
        if timed_start is None:
            timed_start = time.perf_counter()  # the first step traced and compiled the graph
            compile_seconds = timed_start - step_began
        else:
            timed_steps += 1
        running = loss if running is None else RUNNING_LOSS_DECAY * running + (1 - RUNNING_LOSS_DECAY) * loss
        lr = float(rates[step - 1 - start])
        for key, value in (("step", step), ("loss", loss), ("running_loss", running), ("lr", lr)):
            history[key].append(value)
        bar.update(step, loss, running, lr, compile_seconds)
        if on_step is not None:
            on_step(step, loss)
        if step % checkpoint_every == 0 or step == steps:
            save_checkpoint(run_dir, step, model, ema_model, optimizer, history, meta(step), keep=keep_checkpoints)
            last_saved = step

    final_meta = meta(step)
    run = TrainedRun(model=model, ema_model=ema_model, schedule=schedule, profile=profile, history=history,
                     run_dir=run_dir, config=config, step=step, train_seconds=final_meta["train_seconds"],
                     steps_per_second=final_meta["steps_per_second"] or float("nan"), optimizer=optimizer)
    return run


def load_run(run_dir, *, checkpoint=None) -> TrainedRun:
    """The run in ``run_dir``: its ``config.json`` and newest (or the given) checkpoint.

    Raises ``FileNotFoundError`` when the folder holds no config or no checkpoint, saying how
    to train one.
    """
    from ddpm_helpers.schedules import make_schedule

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    if checkpoint is None:
        found = latest_checkpoint(run_dir)
        if found is None:
            raise FileNotFoundError(
                f"{run_dir} has a {CONFIG_FILE} but no checkpoint (ckpt-*.npz): training never reached "
                f"its first checkpoint. Continue it with `python -m ddpm_helpers train --out {run_dir} --resume` "
                "or train(..., resume=True)."
            )
        step, checkpoint = found
    else:
        checkpoint = Path(checkpoint)
        step = int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))
    profile = profile_from_dict(config["profile"])
    schedule = make_schedule(profile.schedule, profile.timesteps)
    model, ema_model = build_models(profile, config.get("num_classes"))
    contents = restore_checkpoint(checkpoint, model, ema_model)
    meta = contents["meta"]
    return TrainedRun(model=model, ema_model=ema_model, schedule=schedule, profile=profile,
                      history={k: list(v) for k, v in contents["history"].items()}, run_dir=run_dir,
                      config=config, step=step, train_seconds=float(meta.get("train_seconds") or float("nan")),
                      steps_per_second=float(meta.get("steps_per_second") or float("nan")), loaded=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


def run_name(profile, *, data=None, steps=None, seed=None, num_classes=None, label_dropout=0.0,
             lr_schedule="seed", **_ignored) -> str:
    """The folder name of a run under the runs directory: the profile's name, plus a suffix for
    every setting that differs from the profile's defaults (so a variant never overwrites the
    book's run). E.g. ``default``, ``default-cond10-drop0.1``, ``default-steps200``.
    """
    from ddpm_helpers.profiles import PROFILES

    parts = [profile.name]
    registered = PROFILES.get(profile.name)
    if registered is not None and registered != profile:
        changed = [f for f in dataclasses.fields(profile) if getattr(profile, f.name) != getattr(registered, f.name)
                   and f.name not in NON_TRAINING_FIELDS]
        if changed:
            text = "-".join(f"{f.name}={getattr(profile, f.name)}" for f in changed)
            text = _slug(text.replace(" ", ""))
            parts.append(text if len(text) <= 40 else hashlib.sha256(text.encode()).hexdigest()[:10])
    if num_classes:
        parts.append(f"cond{int(num_classes)}" + (f"-drop{label_dropout:g}" if label_dropout else ""))
    if data is not None and isinstance(data, str) and data != profile.dataset:
        parts.append("data-" + _slug(data.replace("folder:", "")))
    elif data is not None and not isinstance(data, str):
        parts.append("data-custom")
    if steps is not None and int(steps) != profile.train_steps:
        parts.append(f"steps{int(steps)}")
    if seed is not None and int(seed) != profile.seed:
        parts.append(f"seed{int(seed)}")
    if lr_schedule != "seed":
        parts.append(f"lr-{lr_schedule}")
    return "-".join(parts)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock on ``path`` (so two chapters executed at once do not train the same run twice)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no locking
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_or_train(profile=None, runs_dir=None, **train_kwargs) -> TrainedRun:
    """The trained run of ``profile`` (default: the active one): loaded if it exists, else trained.

    The run lives in ``runs_dir`` (default ``$DDPM_RUNS_DIR``, else ``./runs``) under
    :func:`run_name`. It is reused only if it is complete and its configuration (profile,
    data, steps, seed, conditioning, learning-rate schedule and the code of the model and the
    loop) matches the one requested; otherwise it is trained again, and the reason is printed
    (a run of the same configuration that stopped early is resumed from its last checkpoint).
    ``train_kwargs`` go to :func:`train` (``steps``, ``data``, ``num_classes``, ...).
    """
    from ddpm_helpers.data import load_data
    from ddpm_helpers.profiles import get_profile

    profile = get_profile() if profile is None else profile
    runs_dir = Path(runs_dir) if runs_dir is not None else _default_runs_dir()
    name = run_name(profile, **train_kwargs)
    run_dir = runs_dir / name
    with _lock(runs_dir / f".{name}.lock"):
        reason, resume = None, False
        try:
            stored = read_config(run_dir)
        except FileNotFoundError:
            reason = f"no run in {run_dir}"
        except (OSError, ValueError) as error:
            reason = f"{run_dir / CONFIG_FILE} is unreadable ({error})"
        if reason is None:
            data = train_kwargs.get("data")
            data_spec = profile.dataset if data is None else data
            source = load_data(data_spec, profile.image_size, profile.channels, split="train")
            requested = make_config(
                profile, data_spec=data_spec if isinstance(data_spec, str) else source.name,
                data_fingerprint=source.fingerprint,
                steps=int(train_kwargs.get("steps") or profile.train_steps),
                seed=int(profile.seed if train_kwargs.get("seed") is None else train_kwargs["seed"]),
                num_classes=train_kwargs.get("num_classes"), label_dropout=float(train_kwargs.get("label_dropout", 0.0)),
                lr_schedule=train_kwargs.get("lr_schedule", "seed"),
            )
            diffs = config_differences(stored, requested)
            found = latest_checkpoint(run_dir)
            if diffs:
                reason = f"{run_dir} was trained with a different configuration ({', '.join(diffs)})"
            elif found is None or found[0] < requested["steps"]:
                done = 0 if found is None else found[0]
                reason = f"{run_dir} is incomplete ({done} of {requested['steps']} steps)"
                resume = found is not None  # same configuration: continue where it stopped
        if reason is None:
            run = load_run(run_dir)
            speed = f", {run.steps_per_second:.1f} steps/s" if math.isfinite(run.steps_per_second) else ""
            print(f"Loaded {run_dir}: {run.step} steps, trained in {run.train_seconds:.0f} s{speed}.")
            return run
        print(f"Training: {reason}.")
        kwargs = {k: v for k, v in train_kwargs.items() if k != "resume"}
        return train(profile, run_dir, resume=resume, **kwargs)


def train_from_cli(args) -> int:
    """``python -m ddpm_helpers train``: see ``--help``. Returns the exit status."""
    from ddpm_helpers.profiles import get_profile

    try:
        profile = get_profile(args.profile)
        run_dir = Path(args.out)
        if not args.resume and not getattr(args, "overwrite", False) and list_checkpoints(run_dir):
            raise ValueError(f"{run_dir} already holds checkpoints: pass --resume to continue that run, "
                             "--overwrite to start it again, or choose another --out.")
        checkpoint_every = getattr(args, "checkpoint_every", None)
        run = train(profile, run_dir, steps=args.steps, resume=args.resume, data=args.data,
                    seed=getattr(args, "seed", None), num_classes=getattr(args, "num_classes", None),
                    label_dropout=getattr(args, "label_dropout", 0.0) or 0.0,
                    lr_schedule=getattr(args, "lr_schedule", "seed") or "seed",
                    checkpoint_every=checkpoint_every, jit_compile=False if getattr(args, "no_xla", False) else None)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Trained {run.step} steps in {run.train_seconds:.0f} s ({run.steps_per_second:.2f} steps/s); "
          f"checkpoints and {CONFIG_FILE} in {run.run_dir}.")
    return 0
