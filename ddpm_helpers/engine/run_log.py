"""What a run shows while it trains: TensorBoard scalars and sample grids (chapter "Scaling up", ``sec-scaling-up``).

A long run on faces should leave something to look at before it ends. :class:`RunLog` writes

- TensorBoard scalars with TensorFlow's own summary writer (no ``tensorboard`` package needed to
  write them, only to view them), into ``RUN/logs``: ``loss``,
  ``running_loss``, ``learning_rate`` (per step, as the loss curve holds them) and ``steps_per_second``
  (between two writes); view them with ``tensorboard --logdir RUN/logs``. They are written when
  the training loop reads its losses back (it does so anyway for the progress bar and at
  checkpoints) and flushed to disk at every checkpoint.
- every ``sample_every`` steps, a grid of ``SAMPLE_GRID_IMAGES`` samples of the EMA model
  (DDIM with ``SAMPLE_GRID_STEPS`` steps, always the same seed, so grids of successive steps
  show the same noise becoming faces) as ``RUN/samples/step-000500.png``, and in TensorBoard.

:func:`ddpm_helpers.engine.training.train` makes one with ``tensorboard=True`` or
``sample_every=N`` (both off by default, so the book's chapters print what they printed);
``python -m ddpm_helpers train`` writes the scalars unless ``--no-tensorboard`` is given.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

LOGS_FOLDER = "logs"
SAMPLES_FOLDER = "samples"
SAMPLE_GRID_IMAGES = 16  # images in each training-time grid
SAMPLE_GRID_STEPS = 50  # DDIM steps of each grid (at most T)
SAMPLE_GRID_SEED = 0  # the same starting noise in every grid


def _metadata(plugin: str):
    """The summary metadata TensorBoard's ``plugin`` ("scalars", "images") reads: what ``tf.summary.scalar``
    and ``tf.summary.image`` attach, which need the ``tensorboard`` package that ``tf.summary.write`` does not."""
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin
    return metadata


def write_scalar(name: str, value: float, step: int) -> None:
    """One scalar into the default summary writer, as ``tf.summary.scalar`` writes it."""
    import tensorflow as tf

    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=_metadata("scalars"))


def write_image(name: str, picture, step: int) -> None:
    """One uint8 picture (H, W, C) into the default summary writer, as ``tf.summary.image`` writes it."""
    import tensorflow as tf

    png = tf.io.encode_png(tf.constant(picture, tf.uint8))
    tensor = tf.stack([tf.constant(str(picture.shape[1])), tf.constant(str(picture.shape[0])), png])
    tf.summary.write(name, tensor, step=step, metadata=_metadata("images"))


def sample_grid_path(run_dir, step: int) -> Path:
    """Where the grid of ``step`` goes: ``RUN/samples/step-000500.png``."""
    return Path(run_dir) / SAMPLES_FOLDER / f"step-{step:06d}.png"


class RunLog:
    """TensorBoard scalars and sample grids of one training session (see the module's text).

    ``history`` is the loop's loss curve (lists ``step``, ``loss``, ``running_loss``, ``lr``);
    :meth:`scalars` writes the entries added since the last call. ``ema_model``, ``schedule`` and
    ``image_shape`` draw the grids (``num_classes``: a conditional model gets labels 0, 1, ...).
    """

    def __init__(self, run_dir, *, tensorboard: bool, sample_every: int | None, ema_model=None, schedule=None,
                 image_shape=None, num_classes: int | None = None, history: dict | None = None):
        import tensorflow as tf

        if sample_every is not None and int(sample_every) < 1:
            raise ValueError(f"sample_every (--sample-every) must be at least 1, got {sample_every}.")
        self.run_dir = Path(run_dir)
        self.sample_every = int(sample_every) if sample_every else None
        self.ema_model, self.schedule, self.image_shape = ema_model, schedule, image_shape
        self.num_classes = num_classes
        self.writer = tf.summary.create_file_writer(str(self.run_dir / LOGS_FOLDER)) if tensorboard else None
        self.written = len(history["step"]) if history else 0  # entries of a resumed run are already logged
        self.last_time, self.last_step = None, None
        self.grids: list[Path] = []

    def scalars(self, history: dict) -> None:
        """Write the loss, running loss and learning rate of the steps added to ``history`` since
        the last call, and the steps per second since then (not for the first call, which includes
        compiling)."""
        if self.writer is None or len(history["step"]) <= self.written:
            return
        now, step = time.perf_counter(), history["step"][-1]
        with self.writer.as_default():
            for index in range(self.written, len(history["step"])):
                at = int(history["step"][index])
                write_scalar("loss", history["loss"][index], at)
                write_scalar("running_loss", history["running_loss"][index], at)
                write_scalar("learning_rate", history["lr"][index], at)
            if self.last_time is not None and step > self.last_step:
                write_scalar("steps_per_second", (step - self.last_step) / (now - self.last_time), step)
        self.written = len(history["step"])
        self.last_time, self.last_step = now, step

    def after_step(self, step: int) -> Path | None:
        """Draw and write the grid of ``step`` if it is a multiple of ``sample_every``; its path, else None."""
        if not self.sample_every or step % self.sample_every:
            return None
        from ddpm_helpers.engine.sampling import sample
        from ddpm_helpers.notebook.plotting import image_grid, save_image_grid

        began = time.perf_counter()
        labels = (None if not self.num_classes
                  else (np.arange(SAMPLE_GRID_IMAGES) % int(self.num_classes)).astype(np.int32))
        steps = min(SAMPLE_GRID_STEPS, self.schedule.timesteps)
        images = sample(self.ema_model, self.schedule, SAMPLE_GRID_IMAGES, self.image_shape, sampler="ddim",
                        steps=steps, eta=0.0, seed=SAMPLE_GRID_SEED, labels=labels).images
        scale = max(1, 64 // int(self.image_shape[0]))
        path = save_image_grid(images, sample_grid_path(self.run_dir, step), columns=8, scale=scale)
        if self.writer is not None:
            with self.writer.as_default():
                write_image("samples", image_grid(images, columns=8, scale=scale), step)
        self.grids.append(path)
        if self.last_time is not None:  # the grid's time is not training time
            self.last_time += time.perf_counter() - began
        return path

    def flush(self) -> None:
        """Write what is buffered to disk (at every checkpoint)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
