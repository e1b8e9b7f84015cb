"""Checkpoints of a training run on ``tf.train.Checkpoint`` + ``tf.train.CheckpointManager``.

A checkpoint holds what a resumed run needs to continue exactly (chapter "Training",
``sec-training``): the model's weights, the EMA weights, the optimizer (Adam's moments and its
step counter), the step, the seed that keys the step's random numbers (:mod:`.train_step`), the
loss history and a little meta data (JSON). TensorFlow matches the variables by name, writes a
checkpoint before it points the ``checkpoint`` index file at it (a crash while saving leaves the
previous one the newest) and keeps the newest ``keep``; the same files save and restore under a
``tf.distribute`` strategy.

Files in a run folder: ``checkpoint`` (the index), ``ckpt-<step>.index`` and
``ckpt-<step>.data-*``. Runs written before (``ckpt-00000012.npz``) are recognised by
:func:`old_format_files` and treated as stale (:mod:`ddpm_helpers.engine.runs`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

CHECKPOINT_NAME = "ckpt"
HISTORY_KEYS = ("step", "loss", "running_loss", "lr")
OLD_CHECKPOINT_PATTERN = re.compile(r"^ckpt-(\d{8})\.npz$")


def checkpoint_path(run_dir, step: int) -> Path:
    """The path prefix of the checkpoint of ``step`` (its files add ``.index`` and ``.data-*``)."""
    return Path(run_dir) / f"{CHECKPOINT_NAME}-{int(step)}"


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """``(step, path prefix)`` of every complete checkpoint the index of ``run_dir`` lists, oldest first."""
    import tensorflow as tf

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoint").exists():
        return []
    # The index lists the checkpoints CheckpointManager kept, already joined with the folder as
    # given (relative or not): only their names are taken, and joined with run_dir once.
    state = tf.train.get_checkpoint_state(str(run_dir))
    found = []
    for name in (Path(path).name for path in (state.all_model_checkpoint_paths if state else [])):
        if (run_dir / f"{name}.index").exists():
            found.append((int(name.rsplit("-", 1)[1]), run_dir / name))
    return sorted(found)


def latest_checkpoint(run_dir) -> tuple[int, Path] | None:
    """``(step, path prefix)`` of the newest checkpoint of ``run_dir``, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def old_format_files(run_dir) -> list[Path]:
    """Checkpoints of the package's first format (positional ``.npz`` files) in ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.iterdir() if OLD_CHECKPOINT_PATTERN.match(p.name))


class RunCheckpoint:
    """The checkpoint of one run: what it tracks, and a ``CheckpointManager`` over ``run_dir``.

    ``optimizer`` may be None (loading a run for sampling). ``save(step, history, meta)`` writes
    ``ckpt-<step>`` and keeps the newest ``keep`` (None: all, for a reader that never saves);
    ``restore(step=None)`` reads the newest (or the given) one back and returns
    ``(step, history, meta)``.
    """

    def __init__(self, run_dir, model, ema_model, optimizer=None, *, seed: int = 0, keep: int | None = 2):
        import tensorflow as tf

        self.run_dir = Path(run_dir)
        self.with_optimizer = optimizer is not None
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.seed = tf.Variable(int(seed), dtype=tf.int64, trainable=False, name="rng_seed")
        self.history = tf.Variable(np.zeros((0, len(HISTORY_KEYS))), shape=tf.TensorShape([None, len(HISTORY_KEYS)]),
                                   dtype=tf.float64, trainable=False, name="history")
        self.meta = tf.Variable("{}", dtype=tf.string, trainable=False, name="meta")
        tracked = dict(model=model, ema_model=ema_model, step=self.step, rng_seed=self.seed, history=self.history,
                       meta=self.meta)
        if optimizer is not None:
            tracked["optimizer"] = optimizer
        self.checkpoint = tf.train.Checkpoint(**tracked)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(self.run_dir), max_to_keep=keep,
                                                  checkpoint_name=CHECKPOINT_NAME)

    def save(self, step: int, history: dict, meta: dict) -> Path:
        """Write the checkpoint of ``step`` (and drop the ones beyond the newest ``keep``)."""
        self.step.assign(int(step))
        columns = [np.asarray(history[key], np.float64) for key in HISTORY_KEYS]
        self.history.assign(np.stack(columns, axis=1) if len(columns[0]) else np.zeros((0, len(HISTORY_KEYS))))
        self.meta.assign(json.dumps({**meta, "step": int(step)}))
        return Path(self.manager.save(checkpoint_number=int(step)))

    def restore(self, step: int | None = None):
        """Load the newest checkpoint (or that of ``step``); returns ``(step, history, meta)``."""
        if step is None:
            found = latest_checkpoint(self.run_dir)
            if found is None:
                raise FileNotFoundError(f"{self.run_dir} holds no checkpoint.")
            step = found[0]
        status = self.checkpoint.restore(str(checkpoint_path(self.run_dir, step)))
        if self.with_optimizer:
            status.assert_existing_objects_matched()
        else:
            status.expect_partial()  # the optimizer's slots are not needed to sample
        rows = self.history.numpy()
        history = {key: rows[:, i].tolist() for i, key in enumerate(HISTORY_KEYS)}
        history["step"] = [int(s) for s in history["step"]]
        return int(self.step.numpy()), history, json.loads(self.meta.numpy().decode())
