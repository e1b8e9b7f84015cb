"""Data for the book (chapter "Training", ``sec-training``): digits, image folders, Keras' sets.

The default data set is scikit-learn's 8x8 handwritten digits, which ships inside scikit-learn:
no download, so every build works offline. The original tutorial's data, CelebA, is a folder of
images (:mod:`ddpm_helpers.engine.image_folders`); Keras' MNIST, Fashion-MNIST and CIFAR-10 can be used
by name where there is internet (never in a book build).

Every source becomes a :class:`.DataSource`, whose ``dataset`` yields single ``(image, label)``
pairs, images float32 (H, W, C) in [-1, 1] and labels int32 (``-1`` when the data has none).
:func:`ddpm_helpers.engine.pipeline.make_pipeline` turns it into the training batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ddpm_helpers.engine.data_source import DataSource, _fingerprint, to_model_range  # noqa: F401 (re-exported)
from ddpm_helpers.engine.image_folders import (  # noqa: F401 (re-exported)
    CELEBA_URL,
    IMAGE_EXTENSIONS,
    VERIFY_ALL_UP_TO,
    _folder_help,
    describe_folder_layout,
    find_unreadable_images,
    list_image_files,
    load_image_folder,
    unreadable_error,
)

DIGITS_MAX_VALUE = 16.0  # load_digits stores intensities as integers 0..16

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
# What keras.datasets caches under $KERAS_HOME/datasets (a file or a folder) for each.
KERAS_CACHE_NAMES = {"mnist": "mnist.npz", "fashion_mnist": "fashion-mnist",
                     "cifar10": "cifar-10-batches-py"}
DATASET_NAMES = ("digits",) + KERAS_DATASETS + ("folder:PATH",)


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


def _fit_images(images: np.ndarray, image_size: int | None, channels: int | None) -> np.ndarray:
    """Resize (bilinear, antialiased) and convert channels (grey <-> RGB) of images in [-1, 1]."""
    import tensorflow as tf

    if channels is not None and images.shape[-1] != channels:
        if images.shape[-1] == 1 and channels == 3:
            images = np.repeat(images, 3, axis=-1)
        elif images.shape[-1] == 3 and channels == 1:
            images = (images @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
        else:
            raise ValueError(f"Cannot convert images with {images.shape[-1]} channels to {channels}.")
    if image_size is not None and images.shape[1:3] != (image_size, image_size):
        images = tf.image.resize(images, (image_size, image_size), method="bilinear", antialias=True).numpy()
    return np.clip(images, -1.0, 1.0).astype(np.float32)


def from_arrays(images, labels=None, *, name: str = "arrays", flip: bool = False,
                num_classes: int | None = None) -> DataSource:
    """A :class:`.DataSource` from images (N, H, W, C) already in [-1, 1] and optional integer
    labels."""
    import tensorflow as tf

    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}.")
    if not np.all(np.isfinite(images)) or images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6:
        raise ValueError(
            "images must be finite and lie in [-1, 1] (the model's range); "
            "map pixels with to_model_range(images, max_value) first."
        )
    if labels is None:
        labels_array = np.full(len(images), -1, dtype=np.int32)
    else:
        labels_array = np.asarray(labels, dtype=np.int32)
        if labels_array.shape != (len(images),):
            raise ValueError(f"labels must have shape ({len(images)},), got {labels_array.shape}.")
        if num_classes is None:
            num_classes = int(labels_array.max()) + 1
    dataset = tf.data.Dataset.from_tensor_slices((images, labels_array))
    return DataSource(
        name=name, dataset=dataset, count=len(images), image_shape=tuple(images.shape[1:]),
        num_classes=num_classes if labels is not None else None, flip=flip,
        fingerprint=_fingerprint(images.tobytes(), labels_array.tobytes()),
        images=images, labels=None if labels is None else labels_array,
    )


def _keras_home() -> str:
    """The folder where ``keras.utils.get_file`` caches downloads ($KERAS_HOME or ~/.keras)."""
    try:
        from keras.src.backend.config import keras_home
    except ImportError:  # a Keras without this private helper
        return os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras")
    return keras_home()


def load_keras_dataset(name: str, image_size: int, channels: int, split: str = "train") -> DataSource:
    """MNIST, Fashion-MNIST or CIFAR-10 from ``keras.datasets`` (downloads on first use: needs internet).

    Resized to ``image_size`` and converted to ``channels``; ``split`` is ``"train"`` or
    ``"held_out"`` (the data set's test split). Labels are kept. Only CIFAR-10 (natural images)
    is flipped during training.
    """
    import keras

    loaders = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist,
               "cifar10": keras.datasets.cifar10}
    if name not in loaders:
        raise ValueError(f"Unknown Keras data set {name!r}. Valid: {', '.join(KERAS_DATASETS)}.")
    if split not in ("train", "held_out"):
        raise ValueError(f"Unknown split {split!r}: use 'train' or 'held_out'.")
    try:
        (x_train, y_train), (x_test, y_test) = loaders[name].load_data()
    except Exception as error:  # no internet, proxy, ...
        cached = os.path.join(_keras_home(), "datasets", KERAS_CACHE_NAMES[name])
        reason = " ".join(f"{type(error).__name__}: {error}".split())  # one line
        raise ValueError(
            f"Could not download {name!r} with keras.datasets ({reason}). It needs internet "
            f"once, then reads its cache {cached}: connect and retry, or copy that from a "
            "machine that has it; offline, use --data digits."
        ) from error
    images, labels = (x_train, y_train) if split == "train" else (x_test, y_test)
    images = images[..., None] if images.ndim == 3 else images
    images = _fit_images(to_model_range(images, 255.0), image_size, channels)
    return from_arrays(images, labels.reshape(-1), name=name, flip=(name == "cifar10"), num_classes=10)


def load_data(spec, image_size: int, channels: int, *, split: str = "train", seed: int = 0) -> DataSource:
    """The :class:`.DataSource` named by ``spec``.

    ``spec`` is ``"digits"`` (offline, labels 0-9; ``split`` ``"train"``/``"held_out"``/``"all"``,
    see :func:`load_digits`), ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` (keras.datasets,
    needs internet), ``"folder:PATH"`` (a folder of images such as CelebA), a DataSource (returned
    as is), an array of images in [-1, 1] or an ``(images, labels)`` pair. Images are resized to
    ``image_size`` and converted to ``channels``.
    """
    if isinstance(spec, DataSource):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        return from_arrays(_fit_images(np.asarray(spec[0], np.float32), image_size, channels), spec[1])
    if isinstance(spec, np.ndarray):
        return from_arrays(_fit_images(spec.astype(np.float32), image_size, channels))
    if not isinstance(spec, str):
        raise ValueError(f"Unknown data {type(spec).__name__}: use one of {', '.join(DATASET_NAMES)} or an array.")
    if spec == "digits":
        images, labels = load_digits(split, seed=seed)
        source = from_arrays(_fit_images(images, image_size, channels), labels, name="digits", num_classes=10)
        return source
    if spec in KERAS_DATASETS:
        return load_keras_dataset(spec, image_size, channels, split="held_out" if split == "held_out" else "train")
    if spec.startswith("folder:"):
        folder = spec[len("folder:"):]
        if not folder:
            raise ValueError("folder: needs a path, e.g. --data folder:data/img_align_celeba. " + _folder_help(Path(".")))
        return load_image_folder(folder, image_size, channels)
    raise ValueError(f"Unknown data set {spec!r}. Valid: {', '.join(DATASET_NAMES)}.")


def show_batch(images, labels=None, columns: int = 8, **kwargs):
    """Draw a batch of images in [-1, 1] (with their labels as titles when given) and return the figure."""
    from ddpm_helpers.notebook.plotting import show_image_grid

    images = np.asarray(images)
    titles = None
    if labels is not None:
        labels = np.asarray(labels)[: len(images)]
        if (labels >= 0).any():
            titles = [str(int(v)) for v in labels[:columns]]
    return show_image_grid(images, columns=columns, column_titles=titles, **kwargs)
