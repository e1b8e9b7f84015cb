"""FID and KID on Inception-v3 features: the standard scores for faces (chapter "Scaling up", ``sec-scaling-up``).

The book's own metric (:mod:`ddpm_helpers.measuring.metrics`) scores digits with a classifier it
trains; faces have no labels to train one on, and readers compare face models by FID
(Heusel et al. 2017) and KID (Binkowski et al. 2018), both on the 2048 pool features of
ImageNet's Inception-v3:

- :class:`InceptionFeatures`: ``keras.applications.InceptionV3(include_top=False, pooling="avg")``
  on images resized to 299x299 (bilinear; grey images repeated into RGB), its ImageNet weights
  downloaded by Keras to ``~/.keras/models/`` (``$KERAS_HOME/models``) or read from a file;
  offline and without that file, :class:`InceptionWeightsMissing` says in one line what to
  download and where to copy it.
- :func:`fid`: the Frechet distance (Eq. (10.1) (``eq-frechet``),
  :func:`ddpm_helpers.measuring.frechet.frechet_distance_of_features`) of the two feature sets.
- :func:`kid`: the unbiased estimate of the squared maximum mean discrepancy with the cubic
  polynomial kernel ``k(x, y) = (x . y / d + 1)^3``, averaged over random subsets, with their
  standard deviation and the standard error of the mean. Unlike FID it is unbiased: two samples
  of one distribution give 0 on average at any sample size.

The numbers are comparable with published ones only at the same resolution, sample size and
reference set (papers use 50,000 samples against the training set), and only with the
ImageNet weights: ``weights=None`` (random weights, used by the tests) gives a distance, not FID.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ddpm_helpers.measuring.frechet import frechet_distance_of_features

INCEPTION_SIZE = 299  # the input size Inception-v3 was trained at
WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"  # the name Keras caches it under
WEIGHTS_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/" + WEIGHTS_FILE)
KID_SUBSETS = 100  # random subsets KID is averaged over
KID_SUBSET_SIZE = 1000  # images per subset (fewer when there are fewer)


class InceptionWeightsMissing(RuntimeError):
    """The ImageNet weights of Inception-v3 are neither in Keras' cache nor downloadable."""


def keras_weights_path() -> Path:
    """Where Keras looks for the weights: ``$KERAS_HOME/models/`` (default ``~/.keras/models/``) + ``WEIGHTS_FILE``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models" / WEIGHTS_FILE


def missing_weights_message(reason: str = "") -> str:
    """The one line that says what to download and where to put it."""
    because = f" ({reason})" if reason else ""
    return (f"Inception-v3 weights are not available offline{because}: download {WEIGHTS_URL} on a machine with "
            f"internet and copy it to {keras_weights_path()} (or pass --inception-weights PATH).")


def _resolve_weights(weights):
    """``"imagenet"``: the cached file, else Keras' download, else :class:`InceptionWeightsMissing`;
    a path: that file; ``None``: random weights."""
    if weights is None:
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InceptionWeightsMissing(f"--inception-weights {weights}: no such file. " + missing_weights_message())
        return str(path)
    cached = keras_weights_path()
    if cached.is_file():
        return str(cached)
    import keras

    try:
        return keras.utils.get_file(WEIGHTS_FILE, WEIGHTS_URL, cache_subdir="models",
                                    file_hash="bcbd6486424b2319ff4ef7d526e38f63")
    except Exception as error:  # no network, proxy, DNS, ...: one clear line instead of a traceback
        raise InceptionWeightsMissing(missing_weights_message(f"{type(error).__name__}: {error}"[:160])) from None


class InceptionFeatures:
    """The 2048 average-pooled features of Inception-v3 for uint8 (or [-1, 1]) images (N, H, W, C).

    ``weights``: ``"imagenet"`` (default: from Keras' cache, else downloaded), a path to the ``.h5``
    file, or ``None`` for random weights (tests). ``image_size``: the side the images are resized
    to (299 for FID; the tests use 75, Inception's smallest).
    """

    def __init__(self, weights="imagenet", *, image_size: int = INCEPTION_SIZE, batch_size: int = 50):
        import keras

        path = _resolve_weights(weights)
        self.image_size, self.batch_size, self.weights = int(image_size), int(batch_size), weights
        self.model = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=path,
                                                    input_shape=(self.image_size, self.image_size, 3))

    def __call__(self, images) -> np.ndarray:
        import tensorflow as tf

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"images must have shape (N, H, W, 1 or 3), got {images.shape}.")
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 127.5 - 1.0  # Inception's preprocess_input: [-1, 1]
        parts = []
        for start in range(0, len(images), self.batch_size):
            batch = tf.constant(images[start:start + self.batch_size], tf.float32)
            if batch.shape[-1] == 1:
                batch = tf.repeat(batch, 3, axis=-1)
            batch = tf.image.resize(batch, (self.image_size, self.image_size), method="bilinear")
            parts.append(np.asarray(self.model(batch, training=False), np.float64))
        return np.concatenate(parts)


def fid(features_a, features_b) -> float:
    """FID: the Frechet distance between Gaussians fitted to two Inception feature sets (N, 2048).

    With at least as many images as features it is
    :func:`~ddpm_helpers.measuring.frechet.frechet_distance_of_features`. With fewer, both
    covariances ``S = A A^T`` (``A``: centred features / sqrt(N - 1)) are singular and the same
    formula is computed exactly, and fast, from ``tr (S_a S_b)^(1/2) = ||A_a^T A_b||_*`` (the sum of
    the singular values of an N x M matrix instead of the square root of a 2048 x 2048 one).
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance_of_features(a, b)
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must have shape (N, D) with N >= 2 and one D, got {a.shape} and {b.shape}.")
    centred_a = (a - a.mean(0)) / np.sqrt(len(a) - 1)
    centred_b = (b - b.mean(0)) / np.sqrt(len(b) - 1)
    diff = a.mean(0) - b.mean(0)
    cross = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum()
    value = diff @ diff + (centred_a ** 2).sum() + (centred_b ** 2).sum() - 2.0 * cross
    return max(float(value), 0.0)


def mmd2_unbiased(features_a, features_b) -> float:
    """Unbiased MMD^2 of two feature sets with the kernel ``(x . y / d + 1)^3`` (KID's estimate on one subset)."""
    x, y = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    m, n, d = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"KID needs at least 2 images in each set, got {m} and {n}.")
    k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
                 - 2 * k_xy.mean())


@dataclasses.dataclass
class KID:
    """KID's mean over ``subsets`` random subsets of ``subset_size`` images, their standard
    deviation ``std`` and the standard error of the mean ``stderr = std / sqrt(subsets)``."""

    mean: float
    std: float
    stderr: float
    subsets: int
    subset_size: int


def kid(features_a, features_b, *, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0) -> KID:
    """KID (Binkowski et al. 2018): :func:`mmd2_unbiased` averaged over random subsets (without replacement
    within a subset) of ``min(subset_size, N, M)`` images of each set."""
    x, y = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    size = min(int(subset_size), len(x), len(y))
    rng = np.random.default_rng(seed)
    values = np.array([mmd2_unbiased(x[rng.choice(len(x), size, replace=False)],
                                     y[rng.choice(len(y), size, replace=False)]) for _ in range(int(subsets))])
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return KID(mean=float(values.mean()), std=std, stderr=std / np.sqrt(len(values)), subsets=int(subsets),
               subset_size=size)
