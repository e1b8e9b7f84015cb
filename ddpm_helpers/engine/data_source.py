"""What every data set becomes (chapter "Training", ``sec-training``): a :class:`DataSource`.

:mod:`ddpm_helpers.engine.data` makes one from the digits, Keras' sets or arrays, and
:mod:`ddpm_helpers.engine.image_folders` from a folder of images;
:func:`ddpm_helpers.engine.pipeline.make_pipeline` turns it into training batches.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np


def to_model_range(images: np.ndarray, max_value: float) -> np.ndarray:
    """Map pixel values in [0, max_value] to [-1, 1] (the range the diffusion works in)."""
    return (2.0 * np.asarray(images, dtype=np.float32) / max_value - 1.0).astype(np.float32)


@dataclasses.dataclass
class DataSource:
    """A data set ready for :func:`ddpm_helpers.engine.pipeline.make_pipeline`.

    ``dataset`` yields single ``(image, label)`` pairs: image float32 ``image_shape`` in [-1, 1],
    label int32 (``-1`` when ``num_classes`` is None). ``count`` is the number of images,
    ``flip`` whether random horizontal flips suit the data (faces: yes; digits: never),
    ``fingerprint`` a short hash that changes when the data changes (stored with a trained run).
    In-memory sources also keep ``images`` and ``labels`` as NumPy arrays.

    What :func:`~ddpm_helpers.engine.pipeline.make_pipeline` reads: ``elements`` (the file names of a
    folder; the pairs themselves otherwise), ``load`` (element -> stored pair, uint8 for a folder; None when the
    elements are the pairs), ``to_model_range`` (stored pair -> float pair, after the cache;
    None when already float) and ``in_memory`` (keep the stored pairs in memory).
    """

    name: str
    dataset: object
    count: int
    image_shape: tuple
    num_classes: int | None
    flip: bool
    fingerprint: str
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    files: list | None = None  # image files of a folder source, in the order they are read
    elements: object = None
    load: object = None
    to_model_range: object = None
    in_memory: bool = True

    def __post_init__(self):
        if self.elements is None:
            self.elements = self.dataset

    def __repr__(self) -> str:
        classes = "unlabelled" if self.num_classes is None else f"{self.num_classes} classes"
        return (f"DataSource({self.name!r}: {self.count} images of shape {self.image_shape}, {classes}, "
                f"flip={self.flip})")

    def take(self, count: int) -> np.ndarray:
        """The first ``count`` images (fewer if the source is smaller) as a NumPy array, in file/array order."""
        if self.images is not None:
            return self.images[:count]
        return np.stack([image.numpy() for image, _ in self.dataset.take(count)])

    def cached(self):
        """The stored pairs, decoded once and kept in memory (uint8 for a folder); made once per source.

        Sources built from arrays are in memory already: their elements are returned as they are.
        """
        if self.load is None:
            return self.elements
        if getattr(self, "_cached", None) is None:
            import tensorflow as tf

            self._cached = self.elements.map(self.load, num_parallel_calls=tf.data.AUTOTUNE).cache()
        return self._cached

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches per pass over the data (the remainder is dropped)."""
        steps = self.count // batch_size
        if steps < 1:
            raise ValueError(
                f"The data set {self.name!r} has {self.count} images, fewer than one batch of {batch_size}: "
                "use more images, or a profile with a smaller batch_size "
                "(e.g. profile.replace(batch_size=16))."
            )
        return steps


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else str(part).encode())
    return digest.hexdigest()[:16]


