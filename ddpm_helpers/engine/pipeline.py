"""The tf.data pipeline from a :class:`~ddpm_helpers.engine.data_source.DataSource` to training
batches (chapter "Training", ``sec-training``).

:func:`make_pipeline` gives the batches of one epoch, in one canonical order::

    decode + resize (uint8)  ->  cache  ->  shuffle (all of it)  ->  scale to [-1, 1]
        ->  batch(drop_remainder)  ->  augment (random flips, faces only)  ->  prefetch

Randomness in the pipeline is keyed by ``(seed, epoch)`` and ``(seed, epoch, batch)``, so the batch
of training step ``s`` is the same whether training runs straight through or resumes at ``s``
(:func:`iterate_batches`).
"""

from __future__ import annotations

from ddpm_helpers.engine.data import DataSource


def random_flip(images, seed):
    """Flip each image of a batch left-right with probability 1/2, reproducibly for a given ``seed`` (shape (2,))."""
    import tensorflow as tf

    return tf.image.stateless_random_flip_left_right(images, seed=seed)


def make_pipeline(
    source: DataSource,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    augment: bool | None = None,
    shuffle_buffer: int | None = None,
):
    """The batches ``(images, labels)`` of one epoch (one pass over the data), as a ``tf.data.Dataset``.

    The canonical order (chapter "Training", ``sec-training``):

    1. the source's loader decodes and resizes every image (uint8 for a folder of images);
    2. ``cache()``: that work is done once, in the first epoch, and the cache holds uint8
       (:meth:`.DataSource.cached`); a folder too large for memory (``in_memory`` False) is
       decoded again in every epoch instead, after its file names are shuffled;
    3. ``shuffle`` over the whole data set (a buffer of ``count`` elements, so the shuffle is
       global, not local): a new order in each epoch, seeded by ``(seed, epoch)``;
    4. scale to [-1, 1] (float32), after the cache;
    5. ``batch(drop_remainder=True)``: every batch has ``batch_size`` images (one compiled step);
    6. augmentation, only where it suits the data (``source.flip``: random horizontal flips of
       faces; never digits, whose mirror images are not digits), keyed by ``(seed, epoch, batch)``.
       It comes after the cache on purpose: a random flip before ``cache()`` would be drawn once
       and then replayed from the cache in every epoch;
    7. ``prefetch``: the next batch is prepared while the model trains on this one.

    ``shuffle_buffer`` defaults to the whole data set. The order depends on
    ``seed``, ``epoch`` and TensorFlow's global seed (which :func:`ddpm_helpers.engine.training.train`
    sets to ``seed``), so a resumed run sees the batches an uninterrupted one would.
    """
    import tensorflow as tf

    augment = source.flip if augment is None else augment
    epoch_seed = int(seed) * 1_000_003 + int(epoch)  # per (seed, epoch)
    # 1-3: decoded (once, if it fits in memory), then shuffled by the epoch
    examples = _shuffled(source, shuffle_buffer or source.count, epoch_seed)
    if source.to_model_range is not None:  # 4: uint8 -> [-1, 1]
        examples = examples.map(
            source.to_model_range, num_parallel_calls=tf.data.AUTOTUNE
        )
    batches = examples.batch(batch_size, drop_remainder=True)  # 5
    batches = batches.take(source.steps_per_epoch(batch_size))
    if augment:  # 6: flips keyed by (seed, epoch, batch)

        def flip(index, batch):
            images, labels = batch
            key = tf.stack([tf.constant(epoch_seed, tf.int64), index])
            return random_flip(images, key), labels

        batches = batches.enumerate().map(
            flip, num_parallel_calls=tf.data.AUTOTUNE
        )
    return batches.prefetch(tf.data.AUTOTUNE)  # 7


def _shuffled(source: DataSource, buffer_size: int, epoch_seed: int):
    """Steps 1-3 of :func:`make_pipeline`: the stored pairs in the order of ``epoch_seed``."""
    import tensorflow as tf

    order = dict(buffer_size=buffer_size, seed=epoch_seed % (2**31 - 1), reshuffle_each_iteration=False)
    if source.in_memory:
        return source.cached().shuffle(**order)
    # too large for memory: the same order, shuffling the file names, then decoding
    return source.elements.shuffle(**order).map(source.load, num_parallel_calls=tf.data.AUTOTUNE)


def iterate_batches(source: DataSource, batch_size: int, *, seed: int = 0, start_step: int = 0,
                    stop_step: int | None = None, **pipeline_kwargs):
    """Training batches from step ``start_step`` on: epoch after epoch of :func:`make_pipeline`.

    Step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch``, so starting at
    ``start_step`` gives exactly the batches an uninterrupted run sees from there. Epochs are
    chained into datasets of about 1000 steps: starting an iterator costs a few milliseconds,
    which matters when an epoch of the digits is only a couple of dozen steps. ``stop_step``
    (endless if None) ends the batches at that step, so that a short run builds only the epochs
    it uses (each epoch of a folder of images traces its own ``map`` functions).
    """
    steps_per_epoch = source.steps_per_epoch(batch_size)
    epoch, skip = divmod(int(start_step), steps_per_epoch)
    chunk = max(1, min(50, 1000 // steps_per_epoch))
    last_epoch = None if stop_step is None else -(-int(stop_step) // steps_per_epoch)  # exclusive
    while last_epoch is None or epoch < last_epoch:
        if last_epoch is not None:
            chunk = min(chunk, last_epoch - epoch)
        yield from epochs_dataset(source, batch_size, epoch, chunk, seed=seed, skip=skip, **pipeline_kwargs)
        epoch, skip = epoch + chunk, 0


def epochs_dataset(source: DataSource, batch_size: int, epoch: int, count: int, *, seed: int = 0,
                   skip: int = 0, **pipeline_kwargs):
    """The ``count`` epochs from ``epoch`` on, one after another, less their first ``skip`` batches.

    Without ``tf.data``'s autotuning thread (``options.autotune.enabled = False``): deleting an
    iterator waits for that thread's sleep between two optimisations, which grows to tens of
    seconds, so every chunk of :func:`iterate_batches` ended with a pause that long (20 to 36 s at
    each 1000 steps of the default profile, measured on the book's 2-core machine: a third of its
    training time). The batches and their order are the same with and without it.
    """
    import tensorflow as tf

    dataset = make_pipeline(source, batch_size, seed=seed, epoch=epoch, **pipeline_kwargs)
    for later in range(epoch + 1, epoch + count):
        dataset = dataset.concatenate(make_pipeline(source, batch_size, seed=seed, epoch=later, **pipeline_kwargs))
    return dataset.skip(skip).prefetch(tf.data.AUTOTUNE).with_options(_no_autotune())


def _no_autotune():
    """``tf.data`` options with autotuning off (buffer sizes and parallel calls given as
    ``AUTOTUNE`` take fixed defaults)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options
