"""Folders of images, such as CelebA (chapter "Training", ``sec-training``).

The original CelebA tutorial read its faces with ``keras.utils.image_dataset_from_directory``.
That function makes its own list of files, and it includes hidden files such as the ``._0001.png``
that macOS leaves beside every image: such a folder passed every check and then failed at the
first training step with a raw TensorFlow ``decode_image`` error. Here one list of files,
:func:`list_image_files`, is both what is checked and what ``tf.data`` reads, and one decoder,
:func:`decode_image_file`, both checks and reads each file:

- :func:`list_image_files`: the image files under a folder (no hidden files or folders), or an
  error that says what was found and how to get CelebA;
- :func:`find_unreadable_images`: the files that :func:`decode_image_file`, the decoder training
  uses, rejects (checked with the profile's size and channels);
- :func:`decode_image_file`: read, decode (any PNG, JPEG, GIF or BMP, into the requested
  channels), centre-crop to a square, resize, round to uint8;
- :func:`load_image_folder`: all of it as a :class:`ddpm_helpers.engine.data_source.DataSource`
  whose in-memory cache holds uint8 images (a quarter of float32's memory).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CELEBA_URL = "https://www.kaggle.com/datasets/jessicali9530/celeba-dataset"
# The file types read (those of keras.utils.image_dataset_from_directory; lower-case suffixes).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# Folders up to this many images are decoded file by file when they are loaded; larger ones
# only if TensorFlow fails to decode a file while training.
VERIFY_ALL_UP_TO = 5000
# Decoded uint8 images up to this size are kept in memory (decoded once); larger data sets are
# decoded again in every epoch.
CACHE_LIMIT_BYTES = 2 * 1024**3
# Folders that are not images: macOS resource forks and hidden folders (.ipynb_checkpoints, ...).
SKIPPED_FOLDERS = ("__MACOSX",)


# The one CelebA recipe of the chapters "Training" and "Scaling up" (and of `train --help`).
CELEBA_RECIPE = (
    "python -m ddpm_helpers prepare-celeba ARCHIVE_OR_FOLDER data/celeba32 (Kaggle's archive.zip "
    "or the folder kagglehub.dataset_download('jessicali9530/celeba-dataset') returns), then "
    "python -m ddpm_helpers train --profile celeba --data folder:data/celeba32 --out runs/celeba"
)


def _folder_help(path: Path) -> str:
    return (
        f"To train on CelebA: download it from {CELEBA_URL} (by hand, or with kagglehub), prepare it once "
        f"with {CELEBA_RECIPE} (chapter 'Scaling up'). "
        f"Any folder of {', '.join(IMAGE_EXTENSIONS)} files works (sub-folders are searched too)."
    )


def describe_folder_layout() -> str:
    """How to get CelebA and where to put it (the text of the folder errors)."""
    return _folder_help(Path(os.curdir))


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part in SKIPPED_FOLDERS for part in relative.parts)


def list_image_files(path) -> list[Path]:
    """The image files under ``path`` (searched recursively), sorted, or a ``ValueError`` that says what was found.

    Hidden files and folders (``._0001.png``, ``.ipynb_checkpoints/``) and ``__MACOSX/`` are
    skipped. Raises for a missing path, a path that is not a folder, an empty folder and a
    folder with no image files (naming a few of the files it did find); every message says how
    to get CelebA.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"Image folder {str(path)!r} does not exist (looked at {path.resolve()}). "
                         + _folder_help(path))
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is a file, not a folder of images. " + _folder_help(path))
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _is_hidden(p.relative_to(path)))
    if not files:
        raise ValueError(f"Image folder {str(path)!r} is empty. " + _folder_help(path))
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        examples = ", ".join(str(p.relative_to(path)) for p in files[:3])
        suffixes = sorted({p.suffix.lower() or "(none)" for p in files})
        raise ValueError(
            f"Image folder {str(path)!r} holds {len(files)} file(s) but no images: found {examples}"
            f"{', ...' if len(files) > 3 else ''} (types {', '.join(suffixes)}). " + _folder_help(path)
        )
    return images


# Transparent pixels are composited on this background (white, as a page shows them), 0..255.
BACKGROUND = 255.0


def _to_channels(image, own: int, channels: int):
    """A decoded image of ``own`` channels (1 grey, 2 grey + alpha, 3 RGB, 4 RGBA) as float32 of ``channels``."""
    import tensorflow as tf

    image = tf.cast(tf.ensure_shape(image, (None, None, own)), tf.float32)
    if own in (2, 4):  # composite on BACKGROUND; an alpha that is 0 everywhere (the unused fourth byte
        alpha = image[..., -1:] / 255.0  # of 32-bit BMPs) is not transparency but padding: ignored
        alpha = tf.where(tf.reduce_all(alpha == 0.0), tf.ones_like(alpha), alpha)
        image = image[..., :-1] * alpha + BACKGROUND * (1.0 - alpha)
    if channels == 3 and own < 3:
        return tf.image.grayscale_to_rgb(image)
    if channels == 1 and own > 2:
        return tf.image.rgb_to_grayscale(image)  # ITU-R 601 luma: 0.2989 R + 0.5870 G + 0.1140 B
    return image


def _decode(path, channels: int):
    """The file at ``path`` as float32 (height, width, channels), 0..255: see :func:`decode_image_file`."""
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)  # its own channels
    branches = [lambda own=own: _to_channels(image, own, channels) for own in (1, 2, 3, 4)]
    return tf.switch_case(tf.shape(image)[-1] - 1, branches)


def find_unreadable_images(files, limit: int = 5, *, image_size: int = 8,
                           channels: int = 3) -> list[tuple[Path, str]]:
    """Up to ``limit`` files that :func:`decode_image_file` cannot read and decode, with the reason.

    Each file goes through :func:`decode_image_file` itself, the decoder of the training pipeline,
    in parallel; :func:`load_image_folder` passes the profile's ``image_size`` and ``channels``.
    (Whether a file decodes does not depend on them: every decoded file converts to any size and
    channel count, so the defaults give the same answer.)
    """
    import tensorflow as tf

    names = [str(f) for f in files]
    if not names:
        return []

    def decode(name):
        return decode_image_file(name, image_size, channels)

    decoded = (tf.data.Dataset.from_tensor_slices(names)
               .map(lambda name: (name, tf.shape(decode(name))), num_parallel_calls=tf.data.AUTOTUNE)
               .ignore_errors())
    readable = {name.numpy().decode() for name, _ in decoded}
    bad = []
    for name in names:
        if name in readable:
            continue
        try:
            decode(name)
            reason = "unreadable while decoding in parallel"
        except (tf.errors.OpError, OSError) as error:
            message = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*", "", str(getattr(error, "message", error)))
            reason = f"{type(error).__name__}: {message.strip()}"
        bad.append((Path(name), reason))
        if len(bad) >= limit:
            break
    return bad


def unreadable_error(path, bad, total: int) -> ValueError:
    """The ``ValueError`` for a folder with unreadable image files."""
    listed = "; ".join(f"{p} ({reason})" for p, reason in bad)
    return ValueError(
        f"Image folder {str(path)!r}: {len(bad)}{'+' if len(bad) >= 5 else ''} of its {total} image file(s) "
        f"cannot be read: {listed}. Delete or re-download them. " + _folder_help(Path(path))
    )


def decode_image_file(path, image_size: int, channels: int):
    """One image file as uint8 (image_size, image_size, channels): decoded, centre-cropped to a square, resized.

    Every file is decoded with its own channels, then converted to ``channels`` (1 or 3), so any
    PNG, JPEG, GIF or BMP gives the same kind of image: grey files are repeated into RGB, colour
    files become grey by ITU-R 601 luma, grey + alpha and RGBA (and palette PNGs with a
    transparent colour) are composited on a white background (``BACKGROUND``: a black pixel of
    alpha 128 becomes 255 - 128 = 127), GIFs give their first frame, CMYK JPEGs are converted to
    RGB by TensorFlow. A file that is not an image, or is truncated, raises TensorFlow's
    ``InvalidArgumentError`` (:func:`find_unreadable_images` names such files before training).
    The crop keeps faces in proportion (the original tutorial squashed CelebA's 178x218 faces);
    the resize is bilinear, as ``image_dataset_from_directory(crop_to_aspect_ratio=True)`` does.
    """
    import tensorflow as tf

    image = _decode(path, channels)
    side = tf.minimum(tf.shape(image)[0], tf.shape(image)[1])
    image = tf.image.resize_with_crop_or_pad(image, side, side)  # the centred square
    image = tf.image.resize(image, (image_size, image_size), method="bilinear")
    image = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
    return tf.ensure_shape(image, (image_size, image_size, channels))


def uint8_to_model_range(image, label):
    """uint8 0..255 -> float32 in [-1, 1] (applied after the cache, so the cache holds uint8)."""
    import tensorflow as tf

    return tf.cast(image, tf.float32) / 127.5 - 1.0, label


def load_image_folder(path, image_size: int, channels: int, *, verify: bool | None = None):
    """A folder of images (the original tutorial's CelebA) as a
    :class:`~ddpm_helpers.engine.data_source.DataSource`, unlabelled.

    ``tf.data`` reads exactly the files of :func:`list_image_files`, in that order (shuffling
    happens in :func:`ddpm_helpers.engine.pipeline.make_pipeline`), with :func:`decode_image_file`; faces
    may be flipped. ``verify`` decodes every file first (default: when the folder holds at most
    ``VERIFY_ALL_UP_TO`` images), so a broken file is named before training starts. Bad
    folders raise ``ValueError`` (see :func:`list_image_files`, :func:`unreadable_error`).
    """
    import tensorflow as tf

    from ddpm_helpers.engine.data_source import DataSource, _fingerprint

    path = Path(path).expanduser()
    files = list_image_files(path)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB) for an image folder, got {channels}.")
    if verify is None:
        verify = len(files) <= VERIFY_ALL_UP_TO
    if verify:
        bad = find_unreadable_images(files, image_size=image_size, channels=channels)
        if bad:
            raise unreadable_error(path, bad, len(files))

    def load(name):
        return decode_image_file(name, image_size, channels), tf.constant(-1, tf.int32)

    names = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    stats = [(str(p.relative_to(path)), p.stat().st_size) for p in files]
    return DataSource(
        name=f"folder:{path}", count=len(files), image_shape=(image_size, image_size, channels),
        dataset=names.map(load, num_parallel_calls=tf.data.AUTOTUNE).map(uint8_to_model_range),
        num_classes=None, flip=True, fingerprint=_fingerprint(image_size, channels, *stats), files=files,
        elements=names, load=load, to_model_range=uint8_to_model_range,
        in_memory=len(files) * image_size * image_size * channels <= CACHE_LIMIT_BYTES,
    )
