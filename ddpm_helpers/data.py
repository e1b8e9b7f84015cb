"""Data for the book (chapter "Training"): the offline digits, image folders and tf.data pipelines.

The default data set is scikit-learn's 8x8 handwritten digits, which ships inside scikit-learn:
no download, so every build works offline.
"""

from __future__ import annotations

import numpy as np

DIGITS_MAX_VALUE = 16.0  # load_digits stores intensities as integers 0..16


def to_model_range(images: np.ndarray, max_value: float) -> np.ndarray:
    """Map pixel values in [0, max_value] to [-1, 1] (the range the diffusion works in)."""
    return (2.0 * np.asarray(images, dtype=np.float32) / max_value - 1.0).astype(np.float32)


def load_digits(split: str = "train", held_out_fraction: float = 0.2, seed: int = 0):
    """The 8x8 digits as ``(images, labels)``: images float32 (N, 8, 8, 1) in [-1, 1], labels int32.

    ``split`` is ``"train"``, ``"held_out"`` or ``"all"``. The split is stratified by label and
    fixed by ``seed`` so that every chapter sees the same held-out digits.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "held_out", "all"):
        raise ValueError(f"Unknown split {split!r}: use 'train', 'held_out' or 'all'.")
    bunch = sklearn_load_digits()
    images = to_model_range(bunch.images[..., None], DIGITS_MAX_VALUE)
    labels = bunch.target.astype(np.int32)
    if split == "all":
        return images, labels
    train_x, held_x, train_y, held_y = train_test_split(
        images, labels, test_size=held_out_fraction, random_state=seed, stratify=labels
    )
    return (train_x, train_y) if split == "train" else (held_x, held_y)
