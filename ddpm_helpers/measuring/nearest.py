"""Has the model memorised its training images? Nearest neighbours in pixel space (chapter "Scaling up", ``sec-scaling-up``).

A low FID is also what a model that copies its training faces would get. For each sample,
:func:`nearest_neighbours` finds the closest training image in pixel space (root-mean-square
difference of pixels in [0, 1], so 0 is a copy and 1 is black against white); :func:`memorisation_check`
reports these distances beside the training set's own: each of a few training images against
the others. Samples much closer to the training set than training images are to each other
are copies; :func:`save_closest_pairs` writes the closest pairs as a PNG to look at.
"""

from __future__ import annotations

import dataclasses

import numpy as np

CLOSEST_PAIRS = 8  # pairs drawn by save_closest_pairs


def _flat(images) -> np.ndarray:
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else None
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat / scale if scale else (flat + 1.0) / 2.0  # uint8 -> [0, 1]; [-1, 1] -> [0, 1]


def nearest_neighbours(queries, references, *, exclude_self: bool = False, chunk: int = 256):
    """``(distances, indices)``: for each query image, the RMS pixel distance to its nearest reference image
    and that image's index. ``exclude_self``: queries are the first ``len(queries)`` references
    themselves, each excluded from its own search."""
    q, r = _flat(queries), _flat(references)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"Images differ in size: {np.shape(queries)[1:]} vs {np.shape(references)[1:]}.")
    r_norms = (r * r).sum(1)
    distances, indices = np.empty(len(q)), np.empty(len(q), np.int64)
    for start in range(0, len(q), chunk):
        block = q[start:start + chunk]
        squared = (block * block).sum(1)[:, None] + r_norms[None] - 2.0 * block @ r.T
        if exclude_self:
            rows = np.arange(len(block))
            squared[rows, start + rows] = np.inf
        best = squared.argmin(1)
        indices[start:start + len(block)] = best
        distances[start:start + len(block)] = np.sqrt(np.maximum(squared[np.arange(len(block)), best], 0.0) / q.shape[1])
    return distances, indices


@dataclasses.dataclass
class MemorisationCheck:
    """Nearest-training-image distances of the samples (``sample_distances``, ``sample_indices``) and
    of training images among the others (``train_distances``)."""

    sample_distances: np.ndarray
    sample_indices: np.ndarray
    train_distances: np.ndarray

    def summary(self) -> str:
        """Quantiles of both, and how many samples lie closer than the closest training pair."""
        def q(values):
            low, mid = np.quantile(values, [0.01, 0.5])
            return f"min {values.min():.4f}, 1% {low:.4f}, median {mid:.4f}"

        closer = int((self.sample_distances < self.train_distances.min()).sum())
        return (f"samples -> nearest training image: {q(self.sample_distances)} | training image -> nearest "
                f"other: {q(self.train_distances)} | {closer} of {len(self.sample_distances)} samples closer than "
                "any two training images")


def memorisation_check(samples, train_images, *, train_queries: int = 500, seed: int = 0) -> MemorisationCheck:
    """Distances of ``samples`` to their nearest image of ``train_images``, and of ``train_queries``
    random training images to their nearest other training image (the scale a copy is judged on)."""
    train_images = np.asarray(train_images)
    if len(train_images) < 2:
        raise ValueError("The nearest-neighbour check needs at least 2 training images.")
    distances, indices = nearest_neighbours(samples, train_images)
    chosen = np.random.default_rng(seed).permutation(len(train_images))
    count = min(int(train_queries), len(train_images))
    reordered = train_images[chosen]  # the queries first, so exclude_self can skip each one
    own, _ = nearest_neighbours(reordered[:count], reordered, exclude_self=True)
    return MemorisationCheck(sample_distances=distances, sample_indices=indices, train_distances=own)


def save_closest_pairs(samples, train_images, check: MemorisationCheck, path, *, pairs: int = CLOSEST_PAIRS):
    """A PNG of the ``pairs`` samples closest to a training image: samples on the top row, their
    nearest training images below."""
    from ddpm_helpers.notebook.plotting import save_image_grid

    order = np.argsort(check.sample_distances)[:pairs]
    top = np.asarray(samples)[order]
    bottom = np.asarray(train_images)[check.sample_indices[order]]
    if top.dtype != np.uint8 or bottom.dtype != np.uint8:
        from ddpm_helpers.notebook.plotting import to_uint8

        top, bottom = (x if x.dtype == np.uint8 else to_uint8(x) for x in (top, bottom))
    return save_image_grid(np.concatenate([top, bottom]), path, columns=len(order),
                           scale=max(1, 64 // top.shape[1]))
